/* A native load generator for the gateway overhead benchmark (see _native.py).

   CLIENTS clients, each with one keep-alive HTTP/1.1 connection per path, each sending
   its requests to the paths in turn (client i starts on path i % PATHS), until WARMUP +
   SECONDS have passed or it has sent REQUESTS (0: no limit), after one unmeasured request
   to each path. It writes a prepared request and times the answer from the write to its
   last byte, and reads the worker's own time on it from the answer's "server-timing:
   worker;dur=MS" header or, on a stream, from the same in the body (the [DONE] event's
   comment line).

   Run: _loadgen SECONDS WARMUP CLIENTS REQUESTS HOST PORT REQUEST_FILE [HOST PORT
   REQUEST_FILE]...
   Prints a line "error PATH WHAT" per failed request and, after the run, a line per
   request, in the order they ended: "PATH START LATENCY WORKER OK" (seconds; START from
   the end of WARMUP, negative before it; WORKER -1 when the answer did not say; OK 0 for
   a failed request), then "answered N" (the requests answered, the unmeasured ones
   included, the failed ones not). Exits 2 on bad
   arguments, 1 when a path cannot be reached at all. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PATHS 4
#define TIMEOUT_S 120.0
static const char DUR[] = "worker;dur=";

typedef struct {
    struct sockaddr_in addr;
    char *request;
    size_t request_len;
} path_t;

typedef struct client client_t;

typedef struct {
    int fd;
    int path;
    client_t *client;
    char *buf;
    size_t len, cap;
    double sent;
    /* the answer read so far: set once its head is in (body > 0), then a chunk at a time */
    size_t body, next_chunk, payload, timing, timing_len; /* offsets into buf */
    long length;
    int status, chunked;
} conn_t;

struct client {
    conn_t conns[MAX_PATHS];
    int at;     /* the path of the request in flight */
    long count; /* its requests ended, failed ones included */
};

typedef struct {
    int path, ok;
    double start, latency, worker;
} sample_t;

static path_t paths[MAX_PATHS];
static int n_paths;
static int ep;
static sample_t *samples;
static size_t n_samples, cap_samples;
static long answered;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const char *what) {
    perror(what);
    exit(1);
}

static char *read_file(const char *name, size_t *len) {
    FILE *f = fopen(name, "rb");
    if (!f) fail(name);
    char *data = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap = cap ? 2 * cap : 4096;
            data = realloc(data, cap);
            if (!data) fail("realloc");
        }
        size_t got = fread(data + *len, 1, cap - *len, f);
        if (got == 0) break;
        *len += got;
    }
    fclose(f);
    return data;
}

static int open_conn(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&paths[c->path].addr, sizeof(struct sockaddr_in)) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) fail("epoll_ctl");
    c->fd = fd;
    c->len = c->body = 0;
    return 0;
}

static void close_conn(conn_t *c) {
    if (c->fd >= 0) close(c->fd); /* closing takes it out of the epoll set */
    c->fd = -1;
    c->len = c->body = 0;
}

/* Writes the path's request; -1 if the connection cannot take it. */
static int send_request(conn_t *c) {
    if (c->fd < 0 && open_conn(c) < 0) return -1;
    const path_t *p = &paths[c->path];
    c->sent = now();
    size_t off = 0;
    while (off < p->request_len) {
        ssize_t n = send(c->fd, p->request + off, p->request_len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        off += (size_t)n;
    }
    return 0;
}

static const char *find_last(const char *hay, size_t len, const char *needle, size_t n) {
    const char *last = NULL;
    for (const char *at = hay; at && (size_t)(hay + len - at) >= n;) {
        at = memmem(at, (size_t)(hay + len - at), needle, n);
        if (at) last = at++;
    }
    return last;
}

/* Reads the head of the answer in the buffer, once it is all in: 1 when it was, 0 when
   not yet, -1 when it is not an answer this reads (not HTTP/1.x). */
static int parse_head(conn_t *c) {
    const char *buf = c->buf;
    const char *head_end = memmem(buf, c->len, "\r\n\r\n", 4);
    if (!head_end) return 0;
    if (c->len < 12 || memcmp(buf, "HTTP/1.", 7) != 0) return -1;
    c->status = atoi(buf + 9);
    c->length = -1;
    c->chunked = 0;
    c->timing = c->timing_len = c->payload = 0;
    const char *line = memchr(buf, '\n', (size_t)(head_end - buf)) + 1;
    while (line < head_end + 2) {
        const char *eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
        size_t n = (size_t)(eol - line);
        if (n > 15 && strncasecmp(line, "content-length:", 15) == 0)
            c->length = strtol(line + 15, NULL, 10);
        else if (n > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0 &&
                 memmem(line, n, "chunked", 7))
            c->chunked = 1;
        else if (n > 14 && strncasecmp(line, "server-timing:", 14) == 0) {
            c->timing = (size_t)(line + 14 - buf);
            c->timing_len = n - 14;
        }
        line = eol + 2;
    }
    c->body = c->next_chunk = (size_t)(head_end + 4 - buf);
    return 1;
}

/* 1: the buffer holds a whole answer (status, the worker's ms or -1, body bytes);
   0: not yet; -1: not an answer this reads (no length, or not HTTP/1.x). What was read
   of it stays on the connection, so each call reads only what came since. */
static int parse(conn_t *c, int *status, double *worker, size_t *payload) {
    if (c->body == 0) {
        int head = parse_head(c);
        if (head <= 0) return head;
    }
    const char *buf = c->buf, *end = c->buf + c->len;
    if (c->chunked) {
        for (;;) {
            const char *at = buf + c->next_chunk;
            const char *eol = memmem(at, (size_t)(end - at), "\r\n", 2);
            if (!eol) return 0;
            size_t n = strtoul(at, NULL, 16);
            const char *data = eol + 2;
            if (n == 0) {
                if (end - data < 2) return 0;
                break;
            }
            if ((size_t)(end - data) < n + 2) return 0;
            const char *dur = find_last(data, n, DUR, sizeof DUR - 1);
            if (dur) {
                c->timing = (size_t)(dur - buf);
                c->timing_len = (size_t)(data + n - dur);
            }
            c->payload += n;
            c->next_chunk = (size_t)(data + n + 2 - buf);
        }
    } else if (c->length >= 0) {
        if (c->len - c->body < (size_t)c->length) return 0;
        c->payload = (size_t)c->length;
    } else {
        return -1;
    }
    *status = c->status;
    *payload = c->payload;
    *worker = -1;
    const char *timing = c->timing_len ? buf + c->timing : NULL;
    const char *dur = timing ? memmem(timing, c->timing_len, DUR, sizeof DUR - 1) : NULL;
    if (dur) *worker = strtod(dur + sizeof DUR - 1, NULL);
    return 1;
}

static void record(int path, int ok, double start, double latency, double worker) {
    if (n_samples == cap_samples) {
        cap_samples = cap_samples ? 2 * cap_samples : 65536;
        samples = realloc(samples, cap_samples * sizeof *samples);
        if (!samples) fail("realloc");
    }
    samples[n_samples++] = (sample_t){path, ok, start, latency, worker};
}

static void error(int path, const char *what) { printf("error %d %s\n", path, what); }

/* The client's next request, on the next path: 1 when one is in flight, 0 when the client
   is done (the run's time is up, or it sent its REQUESTS). A request that cannot be sent
   is a failed one on its path, and the client goes on to the next. */
static int next_request(client_t *cl, double begin, double end, long requests) {
    for (;;) {
        if (now() >= end || (requests > 0 && cl->count >= requests)) return 0;
        cl->at = (cl->at + 1) % n_paths;
        conn_t *c = &cl->conns[cl->at];
        if (send_request(c) == 0) return 1;
        error(c->path, "cannot send");
        close_conn(c);
        cl->count++;
        record(c->path, 0, now() - begin, 0, -1);
    }
}

int main(int argc, char **argv) {
    if (argc < 8 || (argc - 5) % 3 != 0 || (argc - 5) / 3 > MAX_PATHS) {
        fprintf(stderr, "usage: %s SECONDS WARMUP CLIENTS REQUESTS (HOST PORT REQUEST_FILE)...\n",
                argv[0]);
        return 2;
    }
    double seconds = atof(argv[1]), warmup = atof(argv[2]);
    int n_clients = atoi(argv[3]);
    long requests = atol(argv[4]);
    n_paths = (argc - 5) / 3;
    if (seconds <= 0 || warmup < 0 || n_clients < 1 || requests < 0) {
        fprintf(stderr, "SECONDS and CLIENTS must be positive, WARMUP and REQUESTS not negative\n");
        return 2;
    }
    for (int p = 0; p < n_paths; p++) {
        paths[p].addr.sin_family = AF_INET;
        paths[p].addr.sin_port = htons((uint16_t)atoi(argv[6 + 3 * p]));
        if (inet_pton(AF_INET, argv[5 + 3 * p], &paths[p].addr.sin_addr) != 1) {
            fprintf(stderr, "not an IPv4 address: %s\n", argv[5 + 3 * p]);
            return 2;
        }
        paths[p].request = read_file(argv[7 + 3 * p], &paths[p].request_len);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) fail("epoll_create1");
    client_t *clients = calloc((size_t)n_clients, sizeof *clients);
    if (!clients) fail("calloc");
    for (int i = 0; i < n_clients; i++) {
        for (int p = 0; p < n_paths; p++) {
            conn_t *c = &clients[i].conns[p];
            *c = (conn_t){.fd = -1, .path = p, .client = &clients[i], .cap = 65536};
            c->buf = malloc(c->cap);
            if (!c->buf) fail("malloc");
            if (open_conn(c) < 0) {
                fprintf(stderr, "cannot connect to %s:%s\n", argv[5 + 3 * p], argv[6 + 3 * p]);
                return 1;
            }
        }
    }
    /* the first answer after a pause is slow on either path: one unmeasured request each */
    int in_flight = 0;
    for (int p = 0; p < n_paths; p++) {
        clients[0].at = p;
        if (send_request(&clients[0].conns[p]) == 0) in_flight = 1;
        while (in_flight) {
            struct epoll_event ev;
            if (epoll_wait(ep, &ev, 1, (int)(TIMEOUT_S * 1e3)) <= 0) {
                fprintf(stderr, "no answer from path %d\n", p);
                return 1;
            }
            conn_t *c = ev.data.ptr;
            ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
            int status = 0;
            double worker;
            size_t payload;
            if (n <= 0) {
                fprintf(stderr, "path %d closed the connection\n", p);
                return 1;
            }
            c->len += (size_t)n;
            if (parse(c, &status, &worker, &payload) != 0) {
                answered += status == 200;
                c->len = c->body = 0;
                in_flight = 0;
            }
        }
    }
    double begin = now() + warmup, end = begin + seconds;
    for (int i = 0; i < n_clients; i++) {
        clients[i].at = (i + n_paths - 1) % n_paths; /* so its first request is on path i % n */
        in_flight += next_request(&clients[i], begin, end, requests);
    }
    struct epoll_event events[256];
    double last_event = now();
    while (in_flight > 0) {
        int n = epoll_wait(ep, events, 256, 1000);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail("epoll_wait");
        double t = now();
        if (n == 0 && t - last_event > TIMEOUT_S) {
            fprintf(stderr, "timed out with %d requests in flight\n", in_flight);
            return 1;
        }
        last_event = t;
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            client_t *cl = c->client;
            int status = 0, done = 0, ok = 0;
            double worker = -1;
            size_t payload = 0;
            if (c->len == c->cap) {
                c->cap *= 2;
                c->buf = realloc(c->buf, c->cap);
                if (!c->buf) fail("realloc");
            }
            ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0) {
                error(c->path, got == 0 ? "connection closed" : strerror(errno));
                close_conn(c);
                done = -1;
            } else {
                c->len += (size_t)got;
                done = parse(c, &status, &worker, &payload);
                if (done == -1) error(c->path, "an answer without a length");
            }
            if (done == 0) continue;
            if (done == 1) {
                double finished = now();
                c->len = c->body = 0;
                if (status != 200)
                    printf("error %d HTTP %d\n", c->path, status);
                else if (payload == 0)
                    error(c->path, "empty answer");
                else
                    ok = 1;
                answered += ok;
                record(c->path, ok, c->sent - begin, finished - c->sent, worker);
            } else {
                close_conn(c);
                record(c->path, 0, c->sent - begin, now() - c->sent, -1);
            }
            in_flight--;
            cl->count++;
            in_flight += next_request(cl, begin, end, requests);
        }
    }
    for (size_t i = 0; i < n_samples; i++) {
        const sample_t *s = &samples[i];
        printf("%d %.9f %.9f %.6f %d\n", s->path, s->start, s->latency,
               s->worker < 0 ? -1.0 : s->worker * 1e-3, s->ok);
    }
    printf("answered %ld\n", answered);
    return 0;
}
