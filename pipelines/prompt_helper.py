"""Improve prompt: a local instruction-tuned language model rewrites a shot in the Wan2.2 form.

Optional and off by default: the studio loads one only when a folder is configured
(`--prompt-model`). The folder is read with transformers' AutoTokenizer / AutoModelForCausalLM,
offline (`local_files_only`), never from the Hub. The model gets one fixed instruction, the
prompt guide's formula (subject, scene, motion, then aesthetic terms; for image-to-video, motion
and camera rather than what the image shows), through the tokenizer's chat template when it has
one. Generation is greedy with a bounded number of new tokens, so the same text gives the same
suggestion; the result is cleaned to one paragraph within the request's prompt limit and shown to
the person to accept or edit, never used unseen.

    helper = PromptHelper.load("/models/qwen2.5-1.5b-instruct")
    suggestion = helper.improve("a cat on a roof", CinematicControls(time_of_day="night"))
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RequestError, StudioError
from .prompting import CinematicControls, compose_prompt
from .request import MAX_PROMPT_CHARS

DEFAULT_MAX_NEW_TOKENS = 240  # a full Wan2.2 prompt is 80-150 words; more is rambling
MAX_NEW_TOKENS = 1024

INSTRUCTION = (
    "You rewrite short video ideas into prompts for the Wan2.2 video model. Write one paragraph "
    "in English, in this order: the subject (who or what, with concrete details), the scene "
    "(where, and what surrounds it), the motion (what moves and how), then aesthetic terms "
    "(light, time of day, shot size, camera angle, lens, camera movement, colour tone, style). "
    "Use plain, concrete words; keep everything the idea says and invent nothing that contradicts "
    "it. Answer with the prompt alone: no title, no list, no quotes, no explanation."
)
IMAGE_INSTRUCTION = (
    " The video starts from an image the person already has: describe the motion and the camera "
    "movement, not what the image already shows."
)
CONTROLS_INSTRUCTION = (
    " The studio adds these chosen terms after your text, so keep to them and do not repeat "
    "them: {terms}."
)

# what models like to put around an answer, removed when cleaning
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:improved |rewritten |final |video )?(?:prompt|rewrite|answer|"
                    r"output|result)(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*", re.IGNORECASE)
_MARKDOWN = re.compile(r"(\*\*|__|`+|^#+\s*|^\s*(?:[-*•]|\d+[.)])\s+)", re.MULTILINE)
_QUOTES = "\"'“”‘’「」『』"


class PromptHelperError(StudioError):
    """The prompt model cannot be loaded or gave nothing usable; the message is one sentence."""


def _tensor_device(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


@dataclass
class PromptHelper:
    """A loaded local language model that suggests Wan2.2-style prompts (see module docstring)."""

    tokenizer: Any
    model: Any
    name: str = "prompt model"  # the folder's name, for messages (never its path)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu",
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> "PromptHelper":
        """Load a causal language model and its tokenizer from a local folder (never the Hub, and
        never the folder's own Python code: `trust_remote_code` stays off)."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise PromptHelperError(
                f"The prompt model folder {path.name or str(folder)!r} was not found; give the path "
                "of a local folder holding an instruction-tuned transformers model.")
        if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
            raise PromptHelperError(f"The prompt model's new-token limit must be between 1 and "
                                    f"{MAX_NEW_TOKENS}, got {max_new_tokens}.")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; one sentence here
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = reason.replace(str(path.resolve()), path.name).replace(str(path), path.name)
            raise PromptHelperError(
                f"The folder {path.name!r} does not hold a language model transformers can load "
                f"({reason[:160]}); point the prompt model at an instruction-tuned causal LM folder."
            ) from None
        model.to(device).eval()
        return cls(tokenizer, model, path.name, int(max_new_tokens))

    def instruction(self, controls: CinematicControls | None = None, image_mode: bool = False) -> str:
        """The fixed instruction, with the image-to-video note and the chosen controls' terms."""
        text = INSTRUCTION + (IMAGE_INSTRUCTION if image_mode else "")
        terms = compose_prompt("", controls or CinematicControls(), image_mode).rstrip(".")
        if terms:
            text += CONTROLS_INSTRUCTION.format(terms=terms[0].lower() + terms[1:])
        return text

    def model_input(self, text: str, controls: CinematicControls | None = None,
                    image_mode: bool = False) -> str:
        """The exact text the model reads: the chat template when the tokenizer has one."""
        instruction = self.instruction(controls, image_mode)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": instruction},
                        {"role": "user", "content": f"Video idea: {text}"}]
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                          add_generation_prompt=True)
            except Exception:  # noqa: BLE001 - some templates refuse a system turn: fold it in
                messages = [{"role": "user", "content": f"{instruction}\n\nVideo idea: {text}"}]
                return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                          add_generation_prompt=True)
        return f"{instruction}\n\nVideo idea: {text}\n\nPrompt:"

    def improve(self, text: str, controls: CinematicControls | None = None,
                image_mode: bool = False, limit: int = MAX_PROMPT_CHARS) -> str:
        """A suggested rewrite of the shot: one paragraph of at most `limit` characters."""
        import torch

        text = " ".join(str(text or "").split())
        if not text:
            raise RequestError("Write a few words about the shot first; the prompt model rewrites "
                               "what you wrote.", "prompt")
        if len(text) > MAX_PROMPT_CHARS:
            raise RequestError(f"The prompt has {len(text):,} characters; the most is "
                               f"{MAX_PROMPT_CHARS:,}: shorten it before improving it.", "prompt")
        if controls is not None:
            controls.validate()
        encoded = self.tokenizer(self.model_input(text, controls, image_mode), return_tensors="pt",
                                 add_special_tokens=False)
        input_ids = encoded["input_ids"]
        room = _context_length(self.model) - input_ids.shape[-1]
        if room < 16:  # too little left to write a prompt in
            raise RequestError(f"The prompt is too long for the prompt model {self.name!r}: "
                               "shorten it before improving it.", "prompt")
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        device = _tensor_device(self.model)
        with self._lock, torch.inference_mode():  # one generation at a time on a shared model
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=encoded.get("attention_mask", torch.ones_like(input_ids)).to(device),
                max_new_tokens=min(self.max_new_tokens, room), do_sample=False, num_beams=1,
                pad_token_id=pad, eos_token_id=eos)
        new_tokens = output[0, input_ids.shape[-1]:]
        cleaned = clean_prompt(self.tokenizer.decode(new_tokens, skip_special_tokens=True), limit)
        if not cleaned:
            raise PromptHelperError("The prompt model gave no usable text this time; edit the "
                                    "prompt yourself, or try different words.")
        return cleaned


def _context_length(model: Any) -> int:
    """How many tokens the model reads in all (prompt and answer together)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 4096


def clean_prompt(raw: str, limit: int = MAX_PROMPT_CHARS) -> str:
    """A model's answer as one plain paragraph of at most `limit` characters: labels, markdown
    and wrapping quotes removed, lines joined, cut at the last sentence (or word) that fits."""
    text = _LABEL.sub("", str(raw or "").strip()).strip()
    text = re.split(r"\n\s*\n", text, maxsplit=1)[0]  # notes after a blank line are not the prompt
    text = " ".join(_MARKDOWN.sub("", text).split())
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    sentence_end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if sentence_end >= limit // 2:
        return cut[: sentence_end + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,;:")
