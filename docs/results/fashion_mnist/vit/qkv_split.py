"""How much of the query, key and value projections each ViT mask keeps, from the runs' ``mask.pt``.

    python docs/results/fashion_mnist/vit/qkv_split.py

``vit_tiny`` computes q, k and v with one fused ``blocks.<i>.attn.qkv`` Linear of ``3 · dim`` outputs: rows
``[0, dim)`` are q, ``[dim, 2·dim)`` k and ``[2·dim, 3·dim)`` v (``initprune.models.vit``: the output is
reshaped as ``(3, heads, dim / heads)``). A per-layer density of the fused layer cannot show a criterion
that keeps v and empties q and k (the failure of every data-dependent criterion on the text transformers,
``docs/results/fortunes/``); this splits it. Rows = variant × sparsity, columns = criteria; each cell is
the density (%) of q, k and v (mean over the blocks and runs), and ``∅qkK/N`` where K of the N (block,
run) pairs kept no weight of q or no weight of k (the attention logits are then the same for every query
or every key, up to the bias). Masks are not committed: this reads the run folders where the runs were
made and writes ``qkv_split.md`` beside this script.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from main_table import (
    SHORT,
    VARIANTS,
    runs_in,
    variant_of,
)  # beside this script, which Python puts on sys.path

from initprune.atomic import atomic_write_text
from initprune.masks import Mask

HERE = Path(__file__).resolve().parent


def split_densities(mask: Mask) -> list[tuple[float, float, float]]:
    """(q, k, v) density of every block's fused ``attn.qkv`` weight, in block order."""
    out = []
    names = sorted((n for n in mask if n.endswith("attn.qkv.weight")), key=lambda n: int(n.split(".")[1]))
    for name in names:
        keep = mask[name].float()
        dim = keep.shape[0] // 3
        out.append(tuple(float(keep[i * dim : (i + 1) * dim].mean()) for i in range(3)))
    return out


def qkv_table() -> list[str]:
    rows = [
        r for r in runs_in("batchnorm") + runs_in("layernorm") if (Path(r["_folder"]) / "mask.pt").is_file()
    ]
    criteria = [c for c in SHORT if any(r["criterion"] == c for r in rows)]
    sparsities = sorted({float(r["sparsity"]) for r in rows})
    lines = [
        "| variant | sparsity | " + " | ".join(SHORT[c] for c in criteria) + " |",
        "|---|---|" + "---|" * len(criteria),
    ]
    for _, label, _ in VARIANTS:
        for s in sparsities:
            cells = []
            for c in criteria:
                runs = [r for r in rows if variant_of(r) == label and r["criterion"] == c
                        and math.isclose(float(r["sparsity"]), s)]  # fmt: skip
                blocks = [b for r in runs for b in split_densities(Mask.load(Path(r["_folder"]) / "mask.pt"))]
                if not blocks:
                    cells.append("")
                    continue
                q, k, v = (100 * sum(b[i] for b in blocks) / len(blocks) for i in range(3))
                empty = sum(b[0] == 0 or b[1] == 0 for b in blocks)
                text = " / ".join(f"{x:.2f}" if x < 10 else f"{x:.1f}" for x in (q, k, v))
                cells.append(text + (f" ∅qk{empty}/{len(blocks)}" if empty else ""))
            if any(cells):
                lines.append(f"| {label} | {s:g} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    torch.set_num_threads(1)
    lines = qkv_table()
    command = "python docs/results/fashion_mnist/vit/qkv_split.py"
    head = (
        f"<!-- made by `{command}` -->\nDensity (%) of q / k / v within each block's fused `attn.qkv` "
        "(mean over blocks and runs); ∅qkK/N: K of N (block, run) pairs kept no weight of q or of k.\n\n"
    )
    text = head + "\n".join(lines) + "\n"
    atomic_write_text(HERE / "qkv_split.md", text)
    print(text, end="")


if __name__ == "__main__":
    main()
