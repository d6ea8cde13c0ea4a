"""A tiny LLaMA-architecture GGUF model with random weights, written by the test session itself
with the ``gguf`` package (the writer llama.cpp's own converters use). Nothing is downloaded.

The text it generates is gibberish; everything around it is real: llama-server tokenizes the
prompt with the model's own vocabulary, applies its chat template, batches the slots, counts
usage and stops when the client goes away.

* Architecture ``llama`` (RMSNorm, RoPE, SwiGLU, separate Q/K/V), f32 weights only, 2 layers of
  width 64 by default: about 1 MB, written in well under a second.
* A SentencePiece-style (``llama``) vocabulary of about 1,100 tokens: ``<unk> <s> </s>``, the
  ChatML control tokens ``<|im_start|> <|im_end|>``, all 256 byte-fallback tokens ``<0xXX>``
  (so any input text tokenizes, emoji included), the printable ASCII characters, and every
  prefix of a few hundred English words (so the SPM merges reach whole words).
* A ChatML chat template in ``tokenizer.chat_template``.
* Seeded weights (numpy's PCG64): the same arguments give a byte-identical file.

One trick makes the model convenient for tests: residual dimension 0 is held at a constant 1.0
(every embedding has 1.0 there, every ``attn_output`` and ``ffn_down`` has a zero row 0), and the
output matrix gives every non-NORMAL token (EOS, control, byte and ``<unk>``) a large negative
weight on that dimension only. The model therefore never samples EOS or a raw byte: the output
is printable ASCII and every generation runs to ``max_tokens`` (``finish_reason == "length"``),
so token counts are exact. ``eos_bias`` makes EOS reachable again (early ``"stop"``).

CLI: ``python -m tests.backends.tiny_model OUT.gguf [--seed N]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

__all__ = ["CHATML_TEMPLATE", "EOS_ID", "TinyModelSpec", "build_vocab", "write_tiny_model"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EOS_ID = 4  # <|im_end|>: the end of a ChatML turn

_WORDS_TEXT = """
the be to of and a in that have it for not on with he as you do at this but his by from they we
say her she or an will my one all would there their what so up out if about who get which go me
when make can like time no just him know take people into year your good some could them see
other than then now look only come its over think also back after use two how our work first
well way even new want because any these give day most us queue redis worker job task stream
token model server client request response message retry timeout batch latency cache chunk event
yield await async inference prompt reply hello world tiny random gibberish llama data value key
list set push pop lease ack nack dead letter priority result status ready done error ok fast slow
engine slot backend budget cancel abort usage deadline
"""
_WORDS = _WORDS_TEXT.split()

_SPACE = "\u2581"  # SentencePiece's visible space


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """The tokens, scores and token types of the SPM vocabulary (ids 0-4 are fixed)."""
    tt = gguf.TokenType
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    seen: set[str] = set()

    def add(piece: str, score: float, kind: gguf.TokenType) -> None:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            scores.append(score)
            types.append(int(kind))

    add("<unk>", 0.0, tt.UNKNOWN)  # 0
    add("<s>", 0.0, tt.CONTROL)  # 1: BOS
    add("</s>", 0.0, tt.CONTROL)  # 2
    add("<|im_start|>", 0.0, tt.CONTROL)  # 3
    add("<|im_end|>", 0.0, tt.CONTROL)  # 4: EOS / end of turn
    for b in range(256):  # byte fallback: llama.cpp looks up <0xXX> for bytes it cannot merge
        add(f"<0x{b:02X}>", 0.0, tt.BYTE)
    add(_SPACE, -1000.0, tt.NORMAL)
    for c in range(0x21, 0x7F):
        add(chr(c), -1000.0, tt.NORMAL)
    # every prefix of "▁word" and "word": SPM merges bigrams, so the pieces must chain
    for word in _WORDS:
        for base in (_SPACE + word, word):
            for i in range(2, len(base) + 1):
                add(base[:i], -1000.0 + 10.0 * i, tt.NORMAL)
    return tokens, scores, types


@dataclass(frozen=True)
class TinyModelSpec:
    """The model's shape and the knobs of its random weights."""

    seed: int = 1234
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 192
    ctx: int = 32768  # llama.context_length (the server's -c per slot must not exceed it)
    mix_std: float = 0.3  # std of attn_output / ffn_down: how much the context mixes in
    logit_std: float = 0.3  # norm of the output rows: higher is peakier, more repetitive
    eos_bias: float | None = None  # None: EOS never sampled; e.g. 40.0: early stops happen


def write_tiny_model(path: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write the model to ``path`` (a ``.gguf`` file) and return the path."""
    s = spec or TinyModelSpec()
    if s.n_embd % s.n_head or s.n_head % s.n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    out_path = Path(path)
    head_dim = s.n_embd // s.n_head
    kv_dim = head_dim * s.n_head_kv
    e, f = s.n_embd, s.n_ff
    rng = np.random.default_rng(s.seed)

    def randn(*shape: int, std: float) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(out_path), "llama")
    w.add_name("rtq-tiny-random-llama")
    w.add_description("random weights written by tests/backends/tiny_model.py; gibberish text")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(s.ctx)
    w.add_embedding_length(e)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(f)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template(CHATML_TEMPLATE)

    # numpy shapes are (out, in); gguf reverses them into ggml's ne = {in, out}
    embd = randn(n_vocab, e, std=0.1)
    embd[:, 0] = 1.0  # the constant dimension
    w.add_tensor("token_embd.weight", embd)
    for i in range(s.n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(e, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", randn(e, e, std=e**-0.5))
        w.add_tensor(f"blk.{i}.attn_k.weight", randn(kv_dim, e, std=e**-0.5))
        w.add_tensor(f"blk.{i}.attn_v.weight", randn(kv_dim, e, std=e**-0.5))
        wo = randn(e, e, std=s.mix_std)
        wo[0, :] = 0.0  # nothing writes into the constant dimension
        w.add_tensor(f"blk.{i}.attn_output.weight", wo)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(e, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", randn(f, e, std=e**-0.5))
        w.add_tensor(f"blk.{i}.ffn_up.weight", randn(f, e, std=e**-0.5))
        wd = randn(e, f, std=s.mix_std)
        wd[0, :] = 0.0
        w.add_tensor(f"blk.{i}.ffn_down.weight", wd)
    w.add_tensor("output_norm.weight", np.ones(e, np.float32))

    out = randn(n_vocab, e, std=1.0)
    out[:, 0] = 0.0
    # equal-norm rows: no token wins just by having a longer output row
    out *= (s.logit_std * np.sqrt(e - 1)) / np.linalg.norm(out, axis=1, keepdims=True)
    suppressed = np.array(types) != int(gguf.TokenType.NORMAL)
    out[suppressed, :] = 0.0
    out[suppressed, 0] = -200.0  # ~47 logits below the best token after RMSNorm: never sampled
    if s.eos_bias is not None:
        first_normal = int(np.flatnonzero(~suppressed)[0])
        out[EOS_ID, 1:] = out[first_normal, 1:]
        out[EOS_ID, 0] = s.eos_bias
    w.add_tensor("output.weight", out)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write the tests' tiny random-weight GGUF model.")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=TinyModelSpec.seed)
    ap.add_argument("--eos-bias", type=float, default=None)
    a = ap.parse_args(argv)
    p = write_tiny_model(a.out, TinyModelSpec(seed=a.seed, eos_bias=a.eos_bias))
    print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
