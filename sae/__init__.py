"""sae: semantic adversarial examples for object detectors through differentiable rendering.

τ(x, θ) = γ(α(β(x), θ)): :mod:`sae.scene` holds the IR and the editor α, :mod:`sae.render`
the renderer γ, :mod:`sae.data` the procedural and real data.
"""

__version__ = "0.1.0"
