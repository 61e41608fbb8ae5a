"""Render a :class:`DetectionResult` as plain text (logs, ``str()``) or HTML (notebooks)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mamba_router.records import CandidateReport, DetectionResult, PlatformFacts


def platform_line(p: PlatformFacts) -> str:
    """One line describing the machine."""
    torch_part = f"torch {p.torch_version} ({p.torch_build} build)" if p.torch_version else "torch not importable"
    cuda = f"yes, {p.cuda_device_count} x {p.cuda_device_name}" if p.cuda_available else "no"
    return (
        f"{p.system} {p.machine}, Python {p.python_version}, {torch_part}; "
        f"CUDA: {cuda}; MPS: {'yes' if p.mps_available else 'no'}"
    )


def status_word(c: CandidateReport) -> str:
    """usable / forceable / broken / not installed / unusable."""
    if not c.installed:
        return "not installed"
    if c.error:
        return "broken"
    if c.available:
        return "usable"
    return "forceable" if c.forceable else "unusable"


def choice_line(result: DetectionResult) -> str:
    """The chosen backend and why, or the error."""
    if result.selected is None:
        return f"no backend chosen: {result.error or result.reason}"
    return f"{result.selected} ({result.selected_family}): {result.reason}"


def detection_to_text(result: DetectionResult) -> str:
    """A plain-text report: platform, switches, one block per candidate, the choice."""
    lines = [
        f"platform : {platform_line(result.platform)}",
        f"switches : ENABLE_MAMBA={'true' if result.enable_mamba else 'false'}, "
        f"MAMBA_ROUTER_BACKEND={result.forced_backend or 'auto'}",
        f"chosen   : {choice_line(result)}",
        "candidates:",
    ]
    for c in result.candidates:
        origin = f"{c.distribution or '?'} {c.version or ''}".strip()
        lines.append(f"  - {c.name} [{c.family or '?'}] from {origin}: {status_word(c)}")
        lines.append(f"      why: {c.reason}")
        if c.install_command and not c.available:
            lines.append(f"      fix: {c.install_command}")
    lines.extend(f"warning  : {w}" for w in result.warnings)
    return "\n".join(lines)


def detection_to_html(result: DetectionResult) -> str:
    """An HTML table for Jupyter."""
    esc = html.escape
    rows = "".join(
        "<tr>"
        f"<td><b>{esc(c.name)}</b></td><td>{esc(c.family or '?')}</td>"
        f"<td>{esc(c.distribution or '?')} {esc(c.version or '')}</td>"
        f"<td>{esc(status_word(c))}</td><td>{esc(c.reason)}</td>"
        f"<td><code>{esc(c.install_command or '') if not c.available else ''}</code></td>"
        "</tr>"
        for c in result.candidates
    )
    return (
        f"<div><p><b>Chosen:</b> {esc(choice_line(result))}<br>"
        f"<b>Platform:</b> {esc(platform_line(result.platform))}</p>"
        "<table><thead><tr><th>backend</th><th>family</th><th>distribution</th><th>status</th>"
        f"<th>reason</th><th>install</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
