"""Model cards for the console, read from each release's typed manifest (``release.json``,
:class:`avokit.contracts.ReleaseManifest`): lineage with every teacher's licence, the evaluation
summary with its per-domain table and charts, and the gate verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from avokit.contracts.base import ContractError
from avokit.contracts.release import MANIFEST_NAME, ReleaseManifest, read_release_manifest
from avokit.gateway.console.charts import grouped_bars

CARD_FILE = "MODEL_CARD.md"


@dataclass
class Card:
    """One release as the console shows it."""

    name: str
    manifest: ReleaseManifest | None
    error: str | None = None  # why the manifest could not be read (admin listing)
    served: bool = False
    card_text: str | None = None  # the release's MODEL_CARD.md, when it ships one
    charts: list[Markup] = field(default_factory=list)

    @property
    def domains(self) -> list[str]:
        """Every domain with a per-domain figure, sorted."""
        if self.manifest is None:
            return []
        return sorted({d for per in self.manifest.eval.domain_bpb.values() for d in per})

    @property
    def models(self) -> list[str]:
        """The evaluated models (student first, then the others as the manifest lists them)."""
        if self.manifest is None:
            return []
        names = list(self.manifest.eval.bpb)
        return sorted(names, key=lambda n: n != "student")


def _charts(manifest: ReleaseManifest) -> list[Markup]:
    bpb = manifest.eval.bpb
    out = [grouped_bars(list(bpb), {"bits per byte": list(bpb.values())},
                        title="Held-out bits per byte (lower is better)", unit="BPB")]
    per = manifest.eval.domain_bpb
    domains = sorted({d for values in per.values() for d in values})
    if domains:
        out.append(grouped_bars(domains, {m: [v.get(d, 0.0) for d in domains]
                                          for m, v in per.items()},
                                title="Bits per byte by domain (lower is better)", unit="BPB"))
    if manifest.eval.tasks:
        tasks = manifest.eval.tasks
        out.append(grouped_bars(list(tasks), {"student accuracy": list(tasks.values())},
                                title="Task accuracy of the student", unit="accuracy"))
    return out


def load_card(directory: Path, served: bool) -> Card:
    """The card of the release in ``directory``; an unreadable manifest is reported, not raised."""
    try:
        manifest = read_release_manifest(directory)
    except ContractError as err:
        return Card(directory.name, None, error=str(err))
    return _card(directory, manifest, served)


def _card(directory: Path, manifest: ReleaseManifest, served: bool) -> Card:
    text = None
    if CARD_FILE in manifest.files and (directory / CARD_FILE).is_file():
        text = (directory / CARD_FILE).read_text(encoding="utf-8", errors="replace")
    return Card(manifest.name, manifest, served=served, card_text=text, charts=_charts(manifest))


def registry_card(registry: Path, name: str, served: set[str]) -> Card | None:
    """The card of the registry's release named ``name`` (its manifest's name), or None.

    Reads manifests until one matches and builds only that card (charts, card text); the
    name from the URL is compared, never used as a path.
    """
    if not registry.is_dir():
        return None
    for child in sorted(registry.iterdir()):
        if not (child / MANIFEST_NAME).is_file():
            continue
        try:
            manifest = read_release_manifest(child)
        except ContractError:
            continue
        if manifest.name == name:
            return _card(child, manifest, name in served)
    return None


def registry_cards(registry: Path, served: set[str]) -> list[Card]:
    """Every release in the registry (passed its gate or not, served or not), by name."""
    if not registry.is_dir():
        return []
    cards = [load_card(child, False) for child in sorted(registry.iterdir())
             if (child / MANIFEST_NAME).is_file()]
    for card in cards:
        card.served = card.manifest is not None and card.name in served
    return cards
