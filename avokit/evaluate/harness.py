"""lm-evaluation-harness adapter: score an avokit model (any HF model dir) with any harness task.

Installed avokit registers ``AvokitLM`` as ``"avokit"`` with lm-eval itself (the
``avokit-lm-eval.pth`` hook, :mod:`avokit._lm_eval_hook`: lm-eval 0.4.x reads no plugin entry
points), so the harness's own command runs it::

    lm_eval run --model avokit --model_args path=runs/NAME/student --tasks arc_easy [--include_path DIR]

``python -m avokit.evaluate.harness`` is the same command line with this module imported first
(for an environment where the hook is not installed, e.g. avokit on ``PYTHONPATH`` only),
or, in Python, import this module and call ``lm_eval.simple_evaluate(model="avokit", ...)``.
Scoring goes through :mod:`avokit.evaluate.scoring`, the same code ``avokit eval`` uses.
lm-eval is an optional dependency (``pip install 'avokit[dev]'``); the core package does not
import this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from avokit.errors import AvokitError, MissingPackageError

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as err:  # keep the message actionable rather than a bare ImportError
    raise MissingPackageError("lm-evaluation-harness (lm-eval)", ".venv/bin/pip install 'lm-eval>=0.4'") from err

from avokit.evaluate.scoring import greedy_generate, loglikelihoods, rolling_loglikelihood


@register_model("avokit")
class AvokitLM(LM):
    """A Hugging Face causal LM directory (an avokit student, baseline or release) for lm-eval.

    model_args: ``path`` (required), ``batch_size`` (8), ``max_length`` (model context or
    1024), ``device`` (``cpu``/``cuda``/``auto``), ``dtype`` (``auto``: bf16 where the device
    computes it natively, else float32; or ``float32``/``bfloat16``/``float16``).
    """

    def __init__(self, path: str | None = None, batch_size: int | str = 8, max_length: int | None = None,
                 device: str = "auto", dtype: str = "auto", **_: Any) -> None:
        super().__init__()
        if not path:
            raise AvokitError("--model_args path=...: the avokit model needs the path of a model directory")
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise AvokitError(f"--model_args path={path}: not a Hugging Face model directory (no config.json)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from avokit.precision import device_type, resolve_dtype, torch_dtype

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub for a local directory
        dev = device_type(device) if device == "auto" else device
        resolved = resolve_dtype(dtype, dev, field="--model_args dtype")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(resolved))
        self.model = model.to(dev).eval()
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        ctx = getattr(self.model.config, "max_position_embeddings", None) or 1024
        self.max_length = int(max_length) if max_length else int(ctx)

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """``(log p(continuation | context), continuation is the greedy decode)`` per request."""
        res = loglikelihoods(self.model, self.tokenizer, [tuple(r.args) for r in requests],
                             self.max_length, self.batch_size)
        return [(r.logprob, r.is_greedy) for r in res]

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        """Total log-probability of each text, from the start token, in rolling windows."""
        return [rolling_loglikelihood(self.model, self.tokenizer, r.args[0], self.max_length, self.batch_size)
                for r in requests]

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Greedy generation cut at the request's ``until`` strings."""
        out = []
        for r in requests:
            context, kwargs = r.args
            until = kwargs.get("until", [])
            until = [until] if isinstance(until, str) else list(until)
            out.append(greedy_generate(self.model, self.tokenizer, context, until,
                                       int(kwargs.get("max_gen_toks", 32)), self.max_length))
        return out


def main() -> None:
    """``lm_eval``'s own command line, with the avokit model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
