"""Train ``zhisuan-tiny-chat``, the demo chat model, on the CPU in a few minutes.

From the text in ``demo/corpus/`` (``dialogues.jsonl`` written by ``generate.py``, and
``prose.txt``) it trains a byte-level BPE tokenizer and a small Llama model with grouped-query
attention, then writes:

* ``<out>/``: Hugging Face format (config.json, model.safetensors in float16,
  generation_config.json, tokenizer.json, tokenizer_config.json with a chat template,
  special_tokens_map.json);
* ``<gguf>``: the same model as an F16 GGUF file for llama.cpp.

Usage::

    python scripts/train_tiny_chat.py            # full run into src/zhisuan/demo/
    python scripts/train_tiny_chat.py --quick --out /tmp/tiny   # smoke run, seconds

Everything is seeded; with the same library versions and thread count the output is the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "demo" / "corpus"
DEFAULT_OUT = ROOT / "src" / "zhisuan" / "demo" / "zhisuan-tiny-chat"
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from rich.logging import RichHandler  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from zhisuan.demo._gguf_export import export_llama_to_gguf  # noqa: E402

logger = logging.getLogger("train_tiny_chat")

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
SPECIAL_TOKENS = [PAD, BOS, END, *ROLE_TOKENS]  # ids 0..5
# Messages are "<|role|>\ncontent<|end|>\n"; a reply is complete when the model emits <|end|>.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Only system, user and assistant roles are supported.') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SAMPLE_PROMPTS = ["Hello!", "What is a GPU?", "What is 3 plus 4?", "Who are you?", "Thanks!"]


def render_chat(messages: list[dict[str, str]]) -> str:
    """Render messages the way CHAT_TEMPLATE does, without a generation prompt."""
    body = "".join(f"<|{m['role']}|>\n{m['content']}{END}\n" for m in messages)
    return BOS + body


def load_documents() -> list[str]:
    """Return every training document, rendered: chats, then prose paragraphs."""
    docs = []
    with (CORPUS / "dialogues.jsonl").open(encoding="utf-8") as f:
        docs = [render_chat(json.loads(line)["messages"]) for line in f if line.strip()]
    prose = (CORPUS / "prose.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in prose.split("\n\n") if p.strip()]
    # Prose is ~1% of the bytes; repeat it so raw-text completion learns it too.
    docs += [BOS + p + END for p in paragraphs] * 8
    return docs


def train_tokenizer(docs: list[str], vocab_size: int, out: Path) -> Any:
    """Train a byte-level BPE tokenizer and write the Hugging Face tokenizer files into ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    # use_regex=True is the GPT-2 split, which llama.cpp reproduces with tokenizer.ggml.pre=gpt2.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Special tokens are not part of the text to learn merges from.
    plain = [d.replace(BOS, "").replace(END, "\n") for d in docs]
    for role in ROLE_TOKENS:
        plain = [d.replace(role, "") for d in plain]
    tok.train_from_iterator(plain, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": BOS, "eos_token": END, "pad_token": PAD}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "additional_special_tokens": ROLE_TOKENS,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {**special, "additional_special_tokens": ROLE_TOKENS}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return tok


def encode_corpus(tok: Any, docs: list[str], seed: int) -> torch.Tensor:
    """Shuffle the documents and concatenate their token ids into one 1-D stream."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    ids: list[int] = []
    for enc in tok.encode_batch([docs[i] for i in order], add_special_tokens=False):
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


def build_model(vocab_size: int, tok: Any, args: argparse.Namespace) -> Any:
    """A randomly initialised LlamaForCausalLM with grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(END),
        pad_token_id=tok.token_to_id(PAD),
    )
    return LlamaForCausalLM(config)


def train(model: Any, data: torch.Tensor, args: argparse.Namespace) -> float:
    """Plain AdamW loop on random windows of the token stream; returns the final smoothed loss."""
    gen = torch.Generator().manual_seed(args.seed)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, then cosine down to 10%
        if step < warmup:
            return float(args.lr * (step + 1) / warmup)
        t = (step - warmup) / max(1, args.steps - warmup)
        return float(args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))))

    model.train()
    smooth = float("nan")
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("train", total=args.steps, loss=float("nan"))
        for step in range(args.steps):
            starts = torch.randint(0, len(data) - args.seq, (args.batch,), generator=gen)
            batch = torch.stack([data[s : s + args.seq] for s in starts])  # (B, T)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = model(input_ids=batch, labels=batch).loss  # the model shifts labels itself
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            value = float(loss.item())
            smooth = value if math.isnan(smooth) else 0.95 * smooth + 0.05 * value
            progress.update(task, advance=1, loss=smooth)
            if step % 50 == 0 or step == args.steps - 1:
                logger.info(
                    "step %d/%d loss %.4f lr %.2e", step + 1, args.steps, value, lr_at(step)
                )
    return smooth


def save(model: Any, out: Path, tok: Any) -> None:
    """Write the model in float16 safetensors with a generation config that stops on <|end|>."""
    import transformers

    generation_config: Any = transformers.GenerationConfig
    model.eval()
    model.generation_config = generation_config(
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(END),
        pad_token_id=tok.token_to_id(PAD),
        max_new_tokens=64,
    )
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)


def show_samples(out: Path) -> None:
    """Reload the saved model and log its greedy replies to a few prompts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(out)
    model: Any = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    for prompt in SAMPLE_PROMPTS:
        ids: Any = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=48, do_sample=False)
        reply = tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=False)
        logger.info("%r -> %r", prompt, reply)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Hugging Face output directory")
    p.add_argument("--gguf", type=Path, default=None, help="GGUF path (default: <out>.gguf)")
    p.add_argument("--quick", action="store_true", help="smoke run: a few tiny steps")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast for matmuls (default: on where the CPU has AVX512-BF16)",
    )
    args = p.parse_args(argv)
    if args.bf16 is None:
        # ~3x faster where the CPU multiplies bf16 natively, much slower where it emulates it.
        args.bf16 = bool(torch.cpu._is_avx512_bf16_supported())
    if args.quick:
        args.steps, args.batch, args.seq = 3, 2, 64
    if args.gguf is None:
        args.gguf = args.out.with_name(args.out.name + ".gguf")
    return args


def main(argv: list[str] | None = None) -> None:
    """Train, save in HF format, export to GGUF and show sample replies."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler()])
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    began = time.perf_counter()

    docs = load_documents()
    tok = train_tokenizer(docs, args.vocab, args.out)
    data = encode_corpus(tok, docs, args.seed)
    logger.info(
        "corpus: %d documents, %d tokens, vocab %d", len(docs), len(data), tok.get_vocab_size()
    )
    model = build_model(tok.get_vocab_size(), tok, args)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2fM parameters, bf16 autocast %s", n_params / 1e6, args.bf16)

    loss = train(model, data, args)
    save(model, args.out, tok)
    export_llama_to_gguf(args.out, args.gguf)
    logger.info("trained in %.0f s, final loss %.3f", time.perf_counter() - began, loss)
    if not args.quick:
        show_samples(args.out)


if __name__ == "__main__":
    main()
