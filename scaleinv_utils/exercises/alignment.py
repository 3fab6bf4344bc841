"""Checks for the chapter "Does scale invariance drive convergence?"."""
import numpy as np

from . import CheckResult, close_to, register


@register("alignment.ex1")
def _new_row(answer, table, name):
    """answer: the table with the new representation's row added."""
    try:
        row = answer.loc[name]
    except (AttributeError, KeyError):
        return CheckResult(False, f"expected the table with a row named {name!r} "
                                  "(pd.concat the new one-row table onto the old one).")
    if len(answer) != len(table) + 1:
        return CheckResult(False, f"expected {len(table) + 1} rows (the old ones plus {name!r}), "
                                  f"got {len(answer)}.")
    # the alignment column the chapter's table has: calibrated CKA, or the encoding score
    target = next((c for c in ("cka[early visual]", "encoding[early visual]") if c in table.columns),
                  "cka[early visual]")
    for col in ("id_cv", "cross_scale_similarity", target):
        if col not in answer.columns or not np.isfinite(row[col]):
            return CheckResult(False, f"the new row has no finite {col!r}: compute it with alignment_table.")
    return CheckResult(True, f"{name!r} added: id_cv = {row['id_cv']:.3f}, {target} = "
                             f"{row[target]:.3f}.")


@register("alignment.ex2")
def _pearson_relation(answer, table, x, y):
    pair = table[[x, y]].dropna()
    expected = np.corrcoef(pair[x], pair[y])[0, 1]
    return close_to(getattr(answer, "statistic", answer), expected, rtol=0, atol=1e-6,
                    what="Pearson correlation",
                    hint="Use relate(..., method='pearson') or relate_columns(table, x, y, method='pearson').")
