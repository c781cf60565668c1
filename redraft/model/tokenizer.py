"""Tokenizer: `tokenizer.json` through `tokenizers`, the chat template from `tokenizer_config.json` through jinja2.

User text never yields special tokens: plain text is encoded with `encode_special_tokens=True`, so a literal
"<|mask|>" in a prompt becomes ordinary text tokens. Special tokens come only from the chat template: the template
is rendered with placeholder markers in place of message contents, its own text is encoded with special tokens
recognised, and each content is encoded as plain text in between.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

MASK_TOKEN = "<|mask|>"
EOS_TOKEN = "<|endoftext|>"
ROLE_END_TOKEN = "<|role_end|>"
DEFAULT_SPECIAL_TOKENS = [EOS_TOKEN, MASK_TOKEN, ROLE_END_TOKEN, "<role>", "</role>"]
# LLaDA2-style turns: <role>HUMAN</role>text<|role_end|> ... <role>ASSISTANT</role>
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = message['role'] | lower %}"
    "{% if role == 'user' %}{% set role = 'human' %}{% endif %}"
    "{{ '<role>' + role | upper + '</role>' + message['content'] + '<|role_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<role>ASSISTANT</role>' }}{% endif %}"
)
_MARK = re.compile("\ue000(\\d+)\ue001")


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    """Text <-> ids with LLaDA2 special tokens (mask, eos, role end) and a safe chat template."""

    def __init__(self, tokenizer: HFTokenizer, config: dict[str, Any] | None = None, *,
                 mask_token: str | None = None, eos_token: str | None = None, pad_token: str | None = None,
                 bos_token: str | None = None):
        self.config = dict(config or {})
        self._special = tokenizer
        self._plain = HFTokenizer.from_str(tokenizer.to_str())
        self._plain.encode_special_tokens = True
        self.mask_token = mask_token or _token_str(self.config.get("mask_token")) or MASK_TOKEN
        self.eos_token = eos_token or _token_str(self.config.get("eos_token")) or EOS_TOKEN
        self.pad_token = pad_token or _token_str(self.config.get("pad_token")) or self.eos_token
        self.bos_token = bos_token or _token_str(self.config.get("bos_token"))
        self.chat_template = self.config.get("chat_template") or DEFAULT_CHAT_TEMPLATE
        self.mask_id = self._require_id(self.mask_token, "mask_token")
        self.eos_id = self._require_id(self.eos_token, "eos_token")
        self.pad_id = self._require_id(self.pad_token, "pad_token")
        self.bos_id = self.token_to_id(self.bos_token) if self.bos_token else None
        role_end = self.token_to_id(ROLE_END_TOKEN)
        self.stop_ids = [self.eos_id] + ([role_end] if role_end is not None else [])
        self.special_ids = sorted({i for i, t in self._special.get_added_tokens_decoder().items() if t.special}
                                  | {self.mask_id, self.eos_id})
        self._env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._env.globals["raise_exception"] = self._raise
        self._compiled: tuple[str, Any] | None = None
        self._max_token_chars: int | None = None

    @staticmethod
    def _raise(message: str):
        raise TemplateError(message)

    def _require_id(self, token: str, field: str) -> int:
        tid = self._special.token_to_id(token)
        if tid is None:
            raise ValueError(f"tokenizer: {field} {token!r} is not in the vocabulary")
        return tid

    # ---------------------------------------------------------------------------------------------- basics
    @property
    def vocab_size(self) -> int:
        return self._special.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._special.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token spellings in `text` stay ordinary text."""
        if not isinstance(text, str):
            raise ValueError(f"encode: expected str, got {type(text).__name__}")
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Several plain texts (like `encode`) in one call that releases the GIL while it tokenizes, so other
        Python threads (a server's event loop) keep running. Uses the `tokenizers` thread pool."""
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"encode_batch: expected str, got {type(text).__name__}")
        return [e.ids for e in self._plain.encode_batch(list(texts), add_special_tokens=False)]

    @property
    def max_token_chars(self) -> int:
        """The longest vocabulary entry in characters: no token covers more characters of the input (byte-level
        entries spell one byte per character, and a byte is at most one character), so a text of `c` characters
        has at least `c / max_token_chars` tokens. A cheap bound for rejecting over-long prompts before tokenizing."""
        if self._max_token_chars is None:
            self._max_token_chars = max(len(t) for t in self._special.get_vocab(with_added_tokens=True))
        return self._max_token_chars

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._special.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------------------------------------- chat
    def render_chat(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                    **kwargs: Any) -> str:
        """The chat template as text (for display; use `apply_chat_template` to get ids)."""
        return self._render(messages, add_generation_prompt, None, **kwargs)

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True, *,
                            release_gil: bool = False, **kwargs: Any) -> list[int]:
        """The chat template applied to `messages`, as ids; contents are plain text (special-token spellings stay
        text). release_gil: tokenize the contents with `encode_batch` (servers: other threads keep running)."""
        contents: list[str] = []
        text = self._render(messages, add_generation_prompt, contents, **kwargs)
        encoded = self.encode_batch(contents) if release_gil else [self.encode(c) for c in contents]
        ids: list[int] = []
        pos = 0
        for m in _MARK.finditer(text):
            if m.start() > pos:
                ids += self._special.encode(text[pos:m.start()], add_special_tokens=False).ids
            ids += encoded[int(m.group(1))]
            pos = m.end()
        if pos < len(text):
            ids += self._special.encode(text[pos:], add_special_tokens=False).ids
        return ids

    def _render(self, messages, add_generation_prompt, contents: list[str] | None, **kwargs) -> str:
        if not isinstance(messages, (list, tuple)) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
        safe = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise ValueError(f"messages[{i}] must be a dict with a string 'role'")
            content = msg.get("content")
            if not isinstance(content, str):
                raise ValueError(f"messages[{i}].content must be a string")
            if contents is not None:
                content_marker = f"\ue000{len(contents)}\ue001"
                contents.append(content.replace("\ue000", "").replace("\ue001", ""))
                content = content_marker
            safe.append({**msg, "content": content})
        try:
            if self._compiled is None or self._compiled[0] != self.chat_template:  # compiling costs ~25 ms
                self._compiled = (self.chat_template, self._env.from_string(self.chat_template))
            return self._compiled[1].render(messages=safe, add_generation_prompt=add_generation_prompt,
                                            bos_token=self.bos_token or "", eos_token=self.eos_token, **kwargs)
        except TemplateError as e:
            raise ValueError(f"chat template: {e}") from None

    # ---------------------------------------------------------------------------------------------- files
    @classmethod
    def from_dir(cls, path: str | os.PathLike, **overrides: str) -> "Tokenizer":
        root = Path(path)
        tok_file = root / "tokenizer.json"
        if not tok_file.exists():
            raise ValueError(f"{root}: no tokenizer.json")
        config_file = root / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        return cls(HFTokenizer.from_file(str(tok_file)), config, **overrides)

    def save(self, path: str | os.PathLike) -> None:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self._special.save(str(root / "tokenizer.json"))
        config = {**self.config, "mask_token": self.mask_token, "eos_token": self.eos_token,
                  "pad_token": self.pad_token, "chat_template": self.chat_template}
        if self.bos_token:
            config["bos_token"] = self.bos_token
        (root / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def load_tokenizer(path_or_hub_id: str | os.PathLike, **overrides: str) -> Tokenizer:
    """Load from a checkpoint directory or hub id (see `redraft.model.loading.resolve_checkpoint`)."""
    from .loading import resolve_checkpoint

    return Tokenizer.from_dir(resolve_checkpoint(path_or_hub_id), **overrides)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = tuple(DEFAULT_SPECIAL_TOKENS),
                        chat_template: str = DEFAULT_CHAT_TEMPLATE, min_frequency: int = 2,
                        split_digits: bool = False) -> Tokenizer:
    """Train a byte-level BPE tokenizer (`tokenizers`) with the LLaDA2 special tokens and a chat template.

    split_digits: every decimal digit is its own pre-token (`pre_tokenizers.Digits(individual_digits=True)` before the
    byte-level split), so no merge spans two digits and numbers are tokenised digit by digit, the same way at every
    length (for arithmetic).
    """
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be at least 300 for byte-level BPE, got {vocab_size}")
    if not isinstance(split_digits, bool):
        raise ValueError(f"split_digits must be a bool, got {split_digits!r}")
    tok = HFTokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    config = {"mask_token": MASK_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "chat_template": chat_template}
    return Tokenizer(tok, config)
