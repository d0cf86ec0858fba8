"""Built-in models: plug-ins like any user's, found by name (``[physics] model = "..."``)."""

BUILTIN = {
    "elasticity": "hybrid.model.library.elasticity:Elasticity",
    "thermal_block": "hybrid.model.library.thermal_block:ThermalBlock",
    "gaussian_source": "hybrid.model.library.gaussian_source:GaussianSource",
    "heat": "hybrid.model.library.heat:Heat",
    "nonlinear_diffusion": "hybrid.model.library.nonlinear_diffusion:NonlinearDiffusion",
}
