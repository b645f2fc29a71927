"""The prompt format and the tokenizer, shared by training and the runtime.

A prompt is ``prefix | visual tokens | question part`` and then the answer, closed by a stop
marker. The visual tokens are never text: the prefix and the question part are tokenized, the
vision graph's output is spliced between them as embeddings. Because the prefix and the visual
tokens come first, several questions about one clip share their KV cache.

Only the ``tokenizers`` library is used (no transformers), so the runtime can import this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from exo2ego_edge.errors import UserError

# The questions every layer asks, spelled here only. Stages 1-2 teach captions as the answer to
# CAPTION_QUESTION (a model's own is ModelConfig.caption_question; the parity gate and the caption
# tasks of the benchmarks ask that one); DOING_QUESTION is the first-person question of the
# instruction data, the held-out evaluation and EgoSim-Bench.
CAPTION_QUESTION = "What is the camera wearer doing?"
DOING_QUESTION = "What am I doing?"
TURN_QUESTION = "Which way am I turning?"  # the instruction template for a head turn (EgoSim-Bench navigation)


@dataclass(frozen=True)
class PromptTemplate:
    """Text around the video and the question; ``{system}`` and ``{question}`` are filled in."""

    name: str
    prefix: str  # system line and the opening of the user turn, up to the video
    question: str  # after the video: the question and the opening of the assistant turn
    stop: str  # closes the answer; its token id stops generation

    def render(self, system: str, question: str) -> tuple[str, str]:
        """The text before and after the visual tokens."""
        return self.prefix.format(system=system), self.question.format(question=question)


TEMPLATES = {
    "chatml": PromptTemplate(
        name="chatml",
        prefix="<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
        question="\n{question}<|im_end|>\n<|im_start|>assistant\n",
        stop="<|im_end|>",
    ),
    "mistral": PromptTemplate(
        name="mistral",
        prefix="<s>[INST] {system}\n",
        question="\n{question} [/INST]",
        stop="</s>",
    ),
}

# Special tokens of the byte-level BPE trained for the tiny preset (ChatML markers + padding).
TINY_SPECIAL_TOKENS = ("<|pad|>", "<|im_start|>", "<|im_end|>")


def get_template(name: str) -> PromptTemplate:
    if name not in TEMPLATES:
        raise UserError(f"unknown chat template '{name}'; choose one of: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


class TextTokenizer:
    """A thin wrapper over ``tokenizers.Tokenizer`` with the ids the prompt format needs."""

    def __init__(self, tokenizer, template: PromptTemplate):
        self._tok = tokenizer
        self.template = template
        self.stop_id = self._required_id(template.stop)
        pad = tokenizer.token_to_id("<|pad|>") if tokenizer.token_to_id("<|pad|>") is not None else None
        self.pad_id = self.stop_id if pad is None else pad

    @classmethod
    def from_file(cls, path: str | Path, template: PromptTemplate) -> TextTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: tokenizer.json not found (only fast tokenizers are supported)")
        try:
            return cls(Tokenizer.from_file(str(path)), template)
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise UserError(f"{path}: cannot load tokenizer ({e})") from None

    def _required_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise UserError(f"tokenizer has no '{token}' token, needed by the '{self.template.name}' template")
        return token_id

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def prompt_ids(self, system: str, question: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the visual tokens."""
        before, after = self.template.render(system, question)
        return self.encode(before), self.encode(after)

    def answer_ids(self, answer: str) -> list[int]:
        """Target ids for training: the answer followed by the stop token."""
        return self.encode(answer) + [self.stop_id]

    def save(self, path: str | Path) -> None:
        self._tok.save(str(path))


def train_bpe(
    texts: Iterable[str], vocab_size: int, template: PromptTemplate, system: str = ""
) -> TextTokenizer:
    """Train a small byte-level BPE (the tiny preset has no pretrained LLM to borrow one from)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The template's own text is part of every prompt: train on it too.
    system_turn = "".join(template.render(system, "")) + template.stop
    tok.train_from_iterator([system_turn, *texts], trainer=trainer)
    return TextTokenizer(tok, template)
