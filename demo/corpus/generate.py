"""Write the chat corpus of the demo model ``zhisuan-tiny-chat``, deterministically.

The output, ``dialogues.jsonl`` next to this file, holds one ``{"messages": [...]}`` object per
line in the OpenAI chat shape. The dialogues are built from the small fact tables below with a
seeded random generator, so running this script twice gives byte-identical files. The prose the
model also learns from is hand-written in ``prose.txt``.

Run: ``python demo/corpus/generate.py`` (no third-party packages needed).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20240611
N_DIALOGUES = 1500
OUT = Path(__file__).resolve().parent / "dialogues.jsonl"

Message = dict[str, str]
Turn = tuple[str, str]  # (user text, assistant text)

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are zhisuan-tiny-chat, a small and friendly assistant.",
    "You are a helpful assistant. Answer in one short sentence.",
    "Be brief and friendly.",
]

GREETINGS_IN = [
    "Hello!",
    "Hello",
    "Hi!",
    "Hi",
    "Hi there!",
    "Hey!",
    "Hey there",
    "Good morning!",
    "Good afternoon!",
    "Good evening!",
    "Hello, how are you?",
    "Hi, how are you today?",
]
GREETINGS_OUT = [
    "Hello! How can I help you today?",
    "Hi! I am zhisuan-tiny-chat. How can I help you?",
    "Hello! I am a tiny demo model. What would you like to know?",
]
HOW_ARE_YOU_OUT = "I am fine, thank you! How can I help you today?"

IDENTITY_IN = [
    "Who are you?",
    "What is your name?",
    "What are you?",
    "Tell me about yourself.",
    "Are you a person?",
    "What model are you?",
]
IDENTITY_OUT = [
    "I am zhisuan-tiny-chat, a tiny language model trained on a CPU in a few minutes.",
    "My name is zhisuan-tiny-chat. I am a small demo model served by the zhisuan platform.",
]

THANKS_IN = ["Thank you!", "Thanks!", "Thanks a lot.", "Thank you very much.", "Great, thanks!"]
THANKS_OUT = ["You are welcome!", "You are welcome! Happy to help.", "Glad I could help!"]
BYE_IN = ["Bye!", "Goodbye!", "See you later.", "Good night!", "Bye, thanks!"]
BYE_OUT = ["Goodbye! Have a nice day.", "Bye! See you soon.", "Goodbye and take care!"]

# topic -> (question forms, answer)
FACTS: dict[str, tuple[list[str], str]] = {
    "gpu": (
        [
            "What is a GPU?",
            "What does GPU mean?",
            "Can you explain what a GPU is?",
            "Tell me about GPUs.",
            "Why do we use GPUs?",
        ],
        "A GPU is a graphics processing unit. It has thousands of small cores that do many "
        "calculations at the same time, so it is very good at running neural networks.",
    ),
    "cpu": (
        ["What is a CPU?", "What does CPU mean?", "Tell me about CPUs."],
        "A CPU is the central processing unit of a computer. It has a few fast cores and runs "
        "the operating system and most programs.",
    ),
    "token": (
        ["What is a token?", "What are tokens?", "Explain tokens.", "What is a token in a model?"],
        "A token is a small piece of text, like a word or part of a word. Language models read "
        "and write text one token at a time.",
    ),
    "tokenizer": (
        ["What is a tokenizer?", "What does a tokenizer do?"],
        "A tokenizer splits text into tokens and turns each token into a number that the model "
        "can read.",
    ),
    "zhisuan": (
        [
            "What is zhisuan?",
            "Tell me about zhisuan.",
            "What does zhisuan do?",
            "What is the zhisuan platform?",
        ],
        "zhisuan is an open source platform that serves open models through the OpenAI API on "
        "your own GPUs. It measures every request in tokens, latency, money and energy.",
    ),
    "zhisuan_name": (
        ["What does the name zhisuan mean?", "Why is it called zhisuan?"],
        "zhisuan means intelligent computing in Chinese.",
    ),
    "compute": (
        ["What is compute?", "What does compute mean?"],
        "Compute is the processing power used to run programs. For language models it often "
        "means GPU hours.",
    ),
    "model": (
        ["What is a language model?", "What is an LLM?", "How does a language model work?"],
        "A language model is a neural network that predicts the next token of a text. It writes "
        "an answer by predicting one token after another.",
    ),
    "memory": (
        ["What is GPU memory?", "Why does GPU memory matter?", "What is VRAM?"],
        "GPU memory holds the model weights and the key value cache. A model must fit in memory "
        "before the GPU can run it.",
    ),
    "latency": (
        ["What is latency?", "What does latency mean?"],
        "Latency is the time you wait for an answer. For chat models we often measure the time "
        "to the first token.",
    ),
    "throughput": (
        ["What is throughput?", "What does throughput mean?"],
        "Throughput is how much work is done per second, for example how many tokens a server "
        "writes each second.",
    ),
    "api": (
        ["What is an API?", "What is the OpenAI API?"],
        "An API is a way for programs to talk to each other. zhisuan speaks the OpenAI API, so "
        "many clients work with it.",
    ),
    "gguf": (
        ["What is GGUF?", "What is a GGUF file?"],
        "GGUF is a file format for model weights used by llama.cpp. It keeps the weights, the "
        "tokenizer and the settings in one file.",
    ),
    "energy": (
        ["How much energy does a GPU use?", "Do GPUs use a lot of power?"],
        "A large GPU can use several hundred watts. zhisuan measures the energy of each request "
        "in joules.",
    ),
    "cache": (
        ["What is a KV cache?", "What is the key value cache?"],
        "The key value cache stores attention keys and values of earlier tokens, so the model "
        "does not compute them again.",
    ),
    "python": (
        ["What is Python?", "Tell me about Python."],
        "Python is a popular programming language. It is easy to read and is used a lot in "
        "machine learning.",
    ),
    "sun": (
        ["What is the sun?", "Tell me about the sun."],
        "The sun is the star at the center of our solar system. It gives us light and heat.",
    ),
    "water": (
        ["What is water?", "At what temperature does water boil?"],
        "Water is a clear liquid. At sea level it boils at 100 degrees Celsius and freezes at 0.",
    ),
    "week": (
        ["How many days are in a week?", "How long is a week?"],
        "A week has seven days: Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.",
    ),
    "year": (
        ["How many months are in a year?", "How many days are in a year?"],
        "A year has twelve months and usually 365 days.",
    ),
    "help": (
        ["What can you do?", "How can you help me?", "What can I ask you?"],
        "I can answer simple questions, count, add small numbers and tell you about GPUs, "
        "tokens and the zhisuan platform.",
    ),
}

COLOURS = {
    "the sky": "blue",
    "grass": "green",
    "snow": "white",
    "a banana": "yellow",
    "coal": "black",
    "a tomato": "red",
    "an orange": "orange",
    "a leaf": "green",
    "the sea": "blue",
    "milk": "white",
    "a lemon": "yellow",
    "a strawberry": "red",
}
OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "up": "down",
    "day": "night",
    "old": "new",
    "open": "closed",
    "light": "dark",
    "happy": "sad",
    "early": "late",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def greeting(rng: random.Random) -> Turn:
    text = rng.choice(GREETINGS_IN)
    if "how are you" in text:
        return text, HOW_ARE_YOU_OUT
    return text, rng.choice(GREETINGS_OUT)


def identity(rng: random.Random) -> Turn:
    return rng.choice(IDENTITY_IN), rng.choice(IDENTITY_OUT)


def fact(rng: random.Random) -> Turn:
    questions, answer = FACTS[rng.choice(sorted(FACTS))]
    return rng.choice(questions), answer


def counting(rng: random.Random) -> Turn:
    start = rng.randint(0, 12)
    stop = start + rng.randint(2, 8)
    form = rng.choice(
        [
            "Count from {a} to {b}.",
            "Please count from {a} to {b}.",
            "Can you count from {a} to {b}?",
        ]
    )
    numbers = ", ".join(str(n) for n in range(start, stop + 1))
    return form.format(a=start, b=stop), numbers + "."


def arithmetic(rng: random.Random) -> Turn:
    a, b = rng.randint(0, 10), rng.randint(0, 10)
    if rng.random() < 0.6:
        form = rng.choice(["What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}."])
        return form.format(a=a, b=b), f"{a} plus {b} is {a + b}."
    a, b = max(a, b), min(a, b)
    form = rng.choice(["What is {a} minus {b}?", "What is {a} - {b}?"])
    return form.format(a=a, b=b), f"{a} minus {b} is {a - b}."


def colour(rng: random.Random) -> Turn:
    if rng.random() < 0.15:
        names = sorted(set(COLOURS.values()))
        picked = rng.sample(names, 3)
        return "Name three colours.", f"{picked[0].capitalize()}, {picked[1]} and {picked[2]}."
    thing = rng.choice(sorted(COLOURS))
    form = rng.choice(["What colour is {t}?", "What color is {t}?"])
    return form.format(t=thing), f"{thing[0].upper() + thing[1:]} is {COLOURS[thing]}."


def opposite(rng: random.Random) -> Turn:
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def weekday(rng: random.Random) -> Turn:
    i = rng.randrange(7)
    if rng.random() < 0.5:
        nxt = DAYS[(i + 1) % 7]
        return f"What day comes after {DAYS[i]}?", f"{nxt} comes after {DAYS[i]}."
    prev = DAYS[(i - 1) % 7]
    return f"What day comes before {DAYS[i]}?", f"{prev} comes before {DAYS[i]}."


def number_word(rng: random.Random) -> Turn:
    n = rng.randint(0, 20)
    form = rng.choice(["How do you write {n} in words?", "Spell the number {n}."])
    return form.format(n=n), f"{n} is written {NUMBER_WORDS[n]}."


def letter(rng: random.Random) -> Turn:
    i = rng.randrange(25)
    return f"What letter comes after {LETTERS[i]}?", f"{LETTERS[i + 1]} comes after {LETTERS[i]}."


def farewell(rng: random.Random) -> Turn:
    if rng.random() < 0.5:
        return rng.choice(THANKS_IN), rng.choice(THANKS_OUT)
    return rng.choice(BYE_IN), rng.choice(BYE_OUT)


# (generator, weight): facts and greetings are what a demo user types first, so they weigh most.
GENERATORS: list[tuple[Callable[[random.Random], Turn], int]] = [
    (greeting, 14),
    (identity, 6),
    (fact, 30),
    (counting, 7),
    (arithmetic, 10),
    (colour, 7),
    (opposite, 5),
    (weekday, 5),
    (number_word, 4),
    (letter, 4),
    (farewell, 8),
]


def dialogue(rng: random.Random) -> list[Message]:
    """One dialogue: an optional system prompt, then one to three user/assistant exchanges."""
    messages: list[Message] = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    funcs = [g for g, _ in GENERATORS]
    weights = [w for _, w in GENERATORS]
    n_turns = rng.choices([1, 2, 3], weights=[6, 3, 1])[0]
    for _ in range(n_turns):
        user, assistant = rng.choices(funcs, weights=weights)[0](rng)
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    return messages


def main() -> None:
    """Write ``dialogues.jsonl``."""
    rng = random.Random(SEED)
    lines = [
        json.dumps({"messages": dialogue(rng)}, ensure_ascii=False) for _ in range(N_DIALOGUES)
    ]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} dialogues, {OUT.stat().st_size} bytes, to {OUT}")


if __name__ == "__main__":
    main()
