"""Names and sizes that the command line needs before it imports anything heavy (torch)."""

#: Virtual KITTI 2 / KITTI frame size, ``(height, width)``.
FULL_SIZE = (375, 1242)
#: The default working resolution of the workflow's CPU scale, ``(height, width)``.
WORKING_SIZE = (188, 621)
#: The detectors ``sae train`` builds (``sae.detectors.train.DETECTORS`` holds their classes).
DETECTOR_NAMES = ("squeezedet", "yolov3")

#: The six semantic parameters (DESIGN §2), in the order combinations are written.
PARAMETERS = ("color", "weather", "foliage", "rotate", "translate", "mesh")
#: The paper's per-step ε (§4.2).
PAPER_EPS = {"color": 0.05, "weather": 0.25, "foliage": 0.10, "rotate": 0.01, "translate": 0.01, "mesh": 0.025}
#: The parameters that act on objects (the others act on the whole frame).
OBJECT_PARAMETERS = ("color", "rotate", "translate", "mesh")


def parse_combo(combo: str) -> tuple[str, ...]:
    """``"translate+rotate+mesh"`` → the parameters in DESIGN order; errors name a bad part."""
    parts = [p.strip() for p in combo.split("+") if p.strip()]
    bad = [p for p in parts if p not in PARAMETERS]
    if bad or not parts:
        raise ValueError(f"bad combination {combo!r}: unknown {bad or 'empty'}; parameters are {', '.join(PARAMETERS)}")
    return tuple(p for p in PARAMETERS if p in parts)


def default_steps(method: str) -> int:
    """A semantic attack's iterations when none are given: sFGSM's one step, six for the others."""
    return 1 if method == "sfgsm" else 6


def ball_multiple(method: str, steps: int | None = None, radius: float | None = None) -> float:
    """The radius of a semantic attack's θ ball in multiples of ε: ``radius`` when given, else
    1 for sFGSM and sPGD (the paper's B(θ0, ε)) and ``steps`` for the iterated methods (the ball
    their steps can reach)."""
    if radius is not None:
        return float(radius)
    steps = default_steps(method) if steps is None else steps
    return 1.0 if method in ("sfgsm", "spgd") else float(steps)
