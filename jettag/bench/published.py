"""Published results on the REFERENCE datasets, for comparison only (never our results).

Only numbers that were read in the paper or the authors' own files (tag [P] in the
project's research notes, ``notes/anchors.md`` section 1) are listed; numbers known only
second-hand or from memory (e.g. ParticleNet-Lite, rPCN and EFN on top tagging, most
quark/gluon rows) are left out until they are checked against their source.

Top tagging: the Top Quark Tagging Reference Dataset (Kasieczka et al., Zenodo 2603256:
Pythia 8 + Delphes, 1.2M/400k/400k jets). Quark/gluon: the Pythia 8 dataset of Komiske,
Metodiev and Thaler (Zenodo 3164691, 2M jets). Rejections are 1/eps_B at the signal
efficiency, the nearest ROC point (as LorentzNet computes it).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "PUBLISHED", "PublishedResult"]


@dataclass(frozen=True)
class PublishedResult:
    """One published row. Values are strings as printed in the source (with their ``±``);
    ``None`` where the source gives none."""

    model: str
    accuracy: str | None
    auc: str | None
    rejection_50: str | None
    rejection_30: str | None
    source: str


_LGATR = "L-GATr paper (arXiv:2405.14806), Table 1"
_LNET_TOP = "LorentzNet-release logs/top/pretrained/test-result.json (single run)"
_LNET_QG = "LorentzNet-release logs/qg/pretrained/test-result.json (single run)"

#: The reference dataset each task's published numbers were obtained on.
DATASETS: dict[str, str] = {
    "top": "Top Quark Tagging Reference Dataset (Kasieczka et al., Zenodo 2603256; Pythia 8 + "
    "Delphes ATLAS card, 1.2M train / 400k val / 400k test jets)",
    "qg": "Pythia 8 quark/gluon dataset of Komiske, Metodiev and Thaler (Zenodo 3164691; Z + "
    "jet, anti-kT R = 0.4, 2M jets, particle-level with full PDG ids)",
}

#: Published rows per task, in the order of the source table.
PUBLISHED: dict[str, tuple[PublishedResult, ...]] = {
    "top": (
        PublishedResult("TopoDNN", "0.916", "0.972", None, "295 ± 5", _LGATR),
        PublishedResult("LoLa", "0.929", "0.980", None, "722 ± 17", _LGATR),
        PublishedResult("P-CNN", "0.930", "0.9803", "201 ± 4", "759 ± 24", _LGATR),
        PublishedResult("N-subjettiness", "0.929", "0.981", None, "867 ± 15", _LGATR),
        PublishedResult("PFN", "0.932", "0.9819", "247 ± 3", "888 ± 17", _LGATR),
        PublishedResult("TreeNiN", "0.933", "0.982", None, "1025 ± 11", _LGATR),
        PublishedResult("ParticleNet", "0.940", "0.9858", "397 ± 7", "1615 ± 93", _LGATR),
        PublishedResult("ParT", "0.940", "0.9858", "413 ± 16", "1602 ± 81", _LGATR),
        PublishedResult("LorentzNet", "0.942", "0.9868", "498 ± 18", "2195 ± 173", _LGATR),
        PublishedResult("LorentzNet (released checkpoint)", "0.9425", "0.98700", "533.7",
                        "2192.8", _LNET_TOP),
        PublishedResult("CGENN", "0.942", "0.9869", "500", "2172", _LGATR),
        PublishedResult("PELICAN (208k)", "0.9426 ± 0.0002", "0.9870 ± 0.0001", None,
                        "2250 ± 75", _LGATR),
        PublishedResult("L-GATr", "0.9423 ± 0.0002", "0.9870 ± 0.0001", "540 ± 20",
                        "2240 ± 70", _LGATR),
    ),
    "qg": (
        PublishedResult("LorentzNet (released checkpoint)", "0.84424", "0.91613", "43.16",
                        "112.87", _LNET_QG),
    ),
}
