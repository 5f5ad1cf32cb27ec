"""Which reward models a config makes besides one proxy per size, and how they combine (issue 20):
the extra members of each ``proxy.ensemble_diversity`` source, the ensembles (best-of-n curves,
calibration rows and RL trials share these names) and the WARM proxy. Pure: names from the config.
"""

from __future__ import annotations

from orchestrator.config.schema import FrontierConfig

CODE = {"seed": "m", "bootstrap": "b", "pretrain": "p"}
"""A source's letter in its members' names: ``proxy-2x16-m1`` (seed), ``-b1`` (bootstrap), ``-p1``."""
PREFIX = {"size": "", "seed": "-seeds", "bootstrap": "-bootstrap", "pretrain": "-pretrain"}
"""A source's part of its ensembles' names: ``ensemble-wco`` (size), ``ensemble-seeds-wco``, ..."""
OBJECTIVES = ("mean", "wco", "uwo")


def extra_members(cfg: FrontierConfig) -> list[tuple[str, int, str]]:
    """``[(size, k, source)]``: the proxies the ensemble sources add (k = 1..seed_members)."""
    z = cfg.proxy.seed_size
    return [(z, k, src) for src in cfg.proxy.ensemble_sources if src != "size"
            for k in range(1, cfg.proxy.seed_members + 1)]


def member_name(size: str, tag: str, k: int = 0, source: str = "") -> str:
    """A proxy's name: ``proxy-<size><tag>`` or, for member k of a source, with ``-<letter><k>``."""
    return f"proxy-{size}{tag}" + (f"-{CODE[source or 'seed']}{k}" if k else "")


def ensemble_sets(cfg: FrontierConfig, tag: str = "") -> list[dict]:
    """The ensembles of the proxies of one label tag (``""`` gold, ``"-ai"`` the judge's): per source,
    ``{source, prefix, sizes, member_ids, members}`` -- ``prefix`` + ``-<objective>`` names its
    best-of-n curve, calibration row and RL trial; ``members`` the proxies' names in order (the
    size's own proxy first). The size ensemble needs >= 2 proxies."""
    out = []
    names = list(cfg.proxy.names)
    for src in cfg.proxy.ensemble_sources:
        if src == "size":
            if len(names) < 2:
                continue
            sizes, ids = names, [""] * len(names)
        else:
            z = cfg.proxy.seed_size
            sizes = [z] * (cfg.proxy.seed_members + 1)
            ids = [""] + [f"-{CODE[src]}{k}" for k in range(1, cfg.proxy.seed_members + 1)]
        out.append({"source": src, "prefix": f"ensemble{tag}{PREFIX[src]}", "sizes": list(sizes),
                    "member_ids": ids, "members": [f"proxy-{s}{tag}{m}" for s, m in zip(sizes, ids)]})
    return out


def warm_name(cfg: FrontierConfig, tag: str = "") -> str:
    """The WARM proxy's name (``proxy.warm``), or "" when off."""
    return f"proxy-{cfg.proxy.seed_size}{tag}-warm" if cfg.proxy.warm else ""


def warm_members(cfg: FrontierConfig, tag: str = "") -> list[str]:
    """The proxies WARM averages: the seed size's own proxy and its ``proxy.warm`` source's members."""
    if not cfg.proxy.warm:
        return []
    z, src = cfg.proxy.seed_size, cfg.proxy.warm
    return [member_name(z, tag)] + [member_name(z, tag, k, src) for k in range(1, cfg.proxy.seed_members + 1)]


def lc_sizes(cfg: FrontierConfig) -> tuple[str, ...]:
    """The sizes with length-controlled proxies (``generalization.length_control_sizes``, or the
    RL sizes; issue 21)."""
    if not cfg.generalization.length_controls:
        return ()
    return cfg.generalization.length_control_sizes or cfg.rl.sizes or cfg.proxy.names


def lc_tag(tag: str, mode: str) -> str:
    """The name tag of a length-controlled proxy: ``<labels tag>-lc-<mode>`` (``proxy-2x16-lc-head``)."""
    return f"{tag}-lc-{mode}"


def principle_size(cfg: FrontierConfig) -> str:
    """The size whose per-principle proxies the aggregation trials optimize (issue 22)."""
    return (cfg.proxy.principle_sizes or cfg.rl.sizes or cfg.proxy.names)[0]


def principle_tag(cfg: FrontierConfig, principle: str) -> str:
    """The name tag of a per-principle proxy: ``<labels tag>-<principle>`` (``proxy-2x64-harmless``,
    with the judge's labels ``proxy-2x64-ai-harmless``)."""
    return ("-ai" if cfg.label.source == "ai" else "") + f"-{principle}"
