"""Write examples/data/judgment_qa.jsonl: 200 invented prompt/completion pairs about judgments, for LoRA demos.

python examples/make_lora_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mamba_router.samples.synthetic import _PARTIES, _STATUTES


def main() -> None:
    rng = random.Random(0)
    target = Path(__file__).parent / "data" / "judgment_qa.jsonl"
    target.parent.mkdir(exist_ok=True)
    with open(target, "w", encoding="utf-8") as handle:
        for _ in range(200):
            appellant, respondent = rng.sample(_PARTIES, 2)
            label, number, statute = rng.choice(_STATUTES)
            amount = rng.randint(1, 99) * 10000
            outcome = rng.choice(["allowed", "dismissed"])
            prompt = (
                f"Judgment: the appeal of {appellant} against {respondent} under {label} {number} of {statute} is "
                f"{outcome}; the respondent shall pay Rs. {amount:,}.\nQuestion: Was the appeal allowed, and what must "
                "be paid?\nAnswer:"
            )
            completion = f" The appeal was {outcome}; Rs. {amount:,} must be paid."
            handle.write(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
