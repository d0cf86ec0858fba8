"""The monodomain model of cardiac tissue.

``[physics] model = "hybrid.model.library.monodomain:Monodomain"``:


    χ C_m ∂V/∂t = ∇·(σ ∇V) − χ C_m I(V, w) + I_stim,   σ∇V·n = 0 on ∂Ω,
    σ = σ_t I + (σ_l − σ_t) f⊗f,   f = (cos α, sin α)   (fibre angle α),

written per unit χ C_m: ∂v/∂t = ∇·(D∇v) + f(v, w) + s(t, x), D = σ/(χ C_m), with v the
scaled transmembrane potential (V = 100 v − 80 mV for Aliev–Panfilov). Ionic models
(``ionic``):

- ``"nagumo"`` (the verification cable): f = k v(1 − v)(v − a), no w. Its travelling front
  has the exact speed c = √(2Dk)(½ − a) (profile v = 1/(1 + exp((x − ct)/√(2D/k)))).
- ``"aliev_panfilov"`` (Aliev & Panfilov 1996), in its standard scaled form with the time
  unit T (ms): f = −[k v(v − a)(v − 1) + v w]/T,
  dw/dt = ε(v, w)(−w − k v(v − a − 1))/T, ε = ε0 + μ1 w/(v + μ2); k = 8, a = 0.15,
  ε0 = 0.002, μ1 = 0.2, μ2 = 0.3, T = 12.9 ms (dimensionless).

Units (Niederer et al. 2011 conventions): length mm, time ms, σ in mS/mm, χ in mm⁻¹,
C_m in μF/mm², so D = σ/(χC_m) is in mm²/ms; the stimulus s is given as dv/dt (per ms) in a
box ``stimulus_region`` (mm) for ``stimulus_duration`` ms from ``stimulus_start``.

Geometry: ``geometry = "cable"`` on an ``interval`` mesh (parameter ``sigma``), or
``"slab"``, parameters ``sigma_l``, ``sigma_t``, on a mesh in mm: ``[mesh] type =
"rectangle"`` (2-D), ``"box"`` (3-D) or a gmsh ``file``. The mesh coordinates are the
physical ones (mm), so the stimulus region and point sensors are given in mm. In 3-D the
fibre f = (cos α(z), sin α(z), 0) lies in the x–y plane and may rotate linearly through the
wall: α(z) = α + Δα (z − z0)/(z1 − z0) (``fibre_angle`` α, ``fibre_rotation`` Δα, both in
degrees; z0, z1 the mesh's extent in z), e.g. α = −60°, Δα = 120° for the usual −60° (endo,
z0) … +60° (epi, z1) rotation. (The former ``size`` setting, a
unit square mapped inside the form, is refused: mesh the slab in mm instead.)

Parameters μ (``[parameters]``, in this order): the conductivities (``sigma``, or
``sigma_l``, ``sigma_t``), then the ionic parameters named in ``ionic_parameters`` (any of
``ap_a``, ``ap_k`` for Aliev–Panfilov, ``nagumo_a``, ``nagumo_k`` for Nagumo). An ionic
parameter in μ replaces the [physics] setting of that name (giving both is refused); the
reaction reads its ``fem.Constant`` at every call, so a new μ needs no rebuild. The case's
[parameters] must list exactly :meth:`Monodomain.parameters`, e.g. ``ionic_parameters =
["ap_a"]`` → ``sigma_l, sigma_t, ap_a``.
The output is the activation time field (first upward crossing of ``threshold``), stepped
by :mod:`hybrid.fem.splitting`; no QoI forms.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import ufl
from dolfinx import fem
from pydantic import Field

import hybrid.model as hm
from hybrid.errors import ModelError
from hybrid.model.reaction import ReactionDiffusion

# open ranges of the parameters μ may hold (σ > 0; the ionic ones as their settings)
_RANGES = {"ap_a": (0.0, 1.0), "nagumo_a": (0.0, 0.5)}


def _ionic_value(name: str, settings, mu):
    """A callable giving the current value: μ's Constant if ``name`` is in μ, else the setting."""
    if name in settings.ionic_parameters:
        c = mu[name]
        return lambda: float(c.value)
    v = float(getattr(settings, name))
    return lambda: v


class Monodomain(hm.Model):
    name = "monodomain"

    class Settings(hm.Settings):
        """[physics] settings of the model."""

        geometry: Literal["cable", "slab"] = "slab"
        ionic: Literal["nagumo", "aliev_panfilov"] = "aliev_panfilov"
        size: list[float] | None = None             # refused (see check): mesh in mm
        fibre_angle: float = 0.0                    # degrees from the x axis
        fibre_rotation: float = 0.0                 # 3-D: degrees of turn from z0 to z1
        chi: float = Field(140.0, gt=0)             # mm⁻¹
        C_m: float = Field(0.01, gt=0)              # μF/mm²
        nagumo_k: float = Field(1.0, gt=0)          # 1/ms
        nagumo_a: float = Field(0.1, gt=0, lt=0.5)
        ap_k: float = Field(8.0, gt=0)
        ap_a: float = Field(0.15, gt=0, lt=1)
        ap_eps0: float = Field(0.002, gt=0)
        ap_mu1: float = Field(0.2, ge=0)
        ap_mu2: float = Field(0.3, gt=0)
        time_scale: float = Field(12.9, gt=0)       # ms per Aliev–Panfilov time unit
        stimulus_region: list[list[float]] = Field(
            default_factory=lambda: [[0.0, 1.5], [0.0, 1.5]])
        stimulus_amplitude: float = Field(0.5, ge=0)    # dv/dt in 1/ms
        stimulus_start: float = 0.0
        stimulus_duration: float = Field(2.0, ge=0)
        threshold: float = Field(0.5, gt=0, lt=1)
        splitting: Literal["godunov", "strang"] = "strang"
        ode: Literal["fe", "rk2", "rk4"] = "rk2"
        substeps: int = Field(1, ge=1, le=100)
        t_end: float = Field(100.0, gt=0)
        dt: float = Field(0.1, gt=0)
        ionic_kernel: Literal["numpy", "c"] = "numpy"   # "c": Aliev–Panfilov compiled
        ionic_parameters: list[Literal["ap_a", "ap_k", "nagumo_a", "nagumo_k"]] = Field(
            default_factory=list)                   # ionic settings that are in μ instead

    def parameters(self):
        s = self.settings
        sigma = ["sigma"] if s.geometry == "cable" else ["sigma_l", "sigma_t"]
        return sigma + list(s.ionic_parameters)

    def qoi_names(self):
        return []

    def check(self, case):
        s, m = self.settings, case.mesh
        if s.size is not None:
            yield "physics.size", ("is gone: mesh the slab in mm, e.g. [mesh] type = "
                                   "'rectangle', extent = [[0, 20], [0, 20]]")
        want = ("interval",) if s.geometry == "cable" else ("rectangle", "box", "file")
        if m.type not in want:
            yield "mesh.type", (f"geometry {s.geometry!r} is posed on mesh type "
                                f"{' or '.join(map(repr, want))} (coordinates in mm), "
                                f"got {m.type!r}")
            return
        dim = {"interval": 1, "rectangle": 2, "box": 3}.get(m.type, m.gdim)
        if s.fibre_rotation != 0.0 and dim != 3:
            yield "physics.fibre_rotation", (f"a transmural rotation needs a 3-D mesh; this is "
                                             f"{dim}-D")
        if len(s.stimulus_region) != dim or any(len(b) != 2 or b[0] >= b[1]
                                                for b in s.stimulus_region):
            yield "physics.stimulus_region", (f"needs {dim} intervals [lo, hi] with lo < hi, "
                                              f"got {s.stimulus_region}")
        if s.ionic_kernel == "c" and s.ionic != "aliev_panfilov":
            yield "physics.ionic_kernel", f"'c' is the Aliev–Panfilov kernel; ionic is {s.ionic!r}"
        yield from self._check_ionic_parameters(case)

    def _check_ionic_parameters(self, case):
        s = self.settings
        names = list(s.ionic_parameters)
        if len(set(names)) != len(names):
            yield "physics.ionic_parameters", f"names repeat: {names}"
        prefix = "ap_" if s.ionic == "aliev_panfilov" else "nagumo_"
        for n in names:
            if not n.startswith(prefix):
                yield "physics.ionic_parameters", (f"{n!r} is not a parameter of ionic model "
                                                   f"{s.ionic!r} ({prefix}a, {prefix}k)")
            if n in s.model_fields_set:
                yield f"physics.{n}", ("is in μ (physics.ionic_parameters): give its range in "
                                       "[parameters], not a value here")
        for p in case.parameters.parameters:
            lo, hi = _RANGES.get(p.name, (0.0, np.inf))
            if not (lo < p.lower and p.upper < hi):
                what = "conductivities" if p.name.startswith("sigma") else p.name
                yield f"parameters.{p.name}", (f"{what} must lie in ({lo:g}, {hi:g}), got "
                                               f"[{p.lower:g}, {p.upper:g}]")

    def _fibre_angle(self, msh):
        """α(z) in radians: constant, or rotating linearly in z (collective: z0, z1)."""
        s = self.settings
        a = float(np.deg2rad(s.fibre_angle))
        if s.fibre_rotation == 0.0:
            return a
        if msh.geometry.dim != 3:
            raise ModelError("physics.fibre_rotation: a transmural rotation needs a 3-D mesh")
        z = msh.geometry.x[:, 2]
        z0 = min(msh.comm.allgather(float(z.min()) if z.size else np.inf))
        z1 = max(msh.comm.allgather(float(z.max()) if z.size else -np.inf))
        x = ufl.SpatialCoordinate(msh)
        return a + float(np.deg2rad(s.fibre_rotation)) * (x[2] - z0) / (z1 - z0)

    def build(self, ctx):
        s, msh = self.settings, ctx.mesh
        V = fem.functionspace(msh, ("Lagrange", 1))
        v, phi = fem.Function(V, name="v"), ufl.TestFunction(V)
        scale = 1.0 / (s.chi * s.C_m)
        dim = msh.geometry.dim
        if s.geometry == "cable":
            D = scale * ctx.mu["sigma"]
        else:
            a = self._fibre_angle(msh)
            f = ufl.as_vector([ufl.cos(a), ufl.sin(a)] + [0.0] * (dim - 2))
            sl, st = ctx.mu["sigma_l"], ctx.mu["sigma_t"]
            D = scale * (st * ufl.Identity(dim) + (sl - st) * ufl.outer(f, f))
        F = ufl.inner(D * ufl.grad(v), ufl.grad(phi)) * ufl.dx
        n_loc = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
        x = V.tabulate_dof_coordinates()[:n_loc, :dim]
        box = np.asarray(s.stimulus_region, float)
        if box.shape != (dim, 2):
            raise ModelError(f"physics.stimulus_region: needs {dim} intervals [lo, hi] on this "
                             f"{dim}-D mesh, got {s.stimulus_region}")
        inside = np.all((x >= box[:, 0] - 1e-12) & (x <= box[:, 1] + 1e-12), axis=1)
        stim = np.where(inside, s.stimulus_amplitude, 0.0)
        t_on, t_off = s.stimulus_start, s.stimulus_start + s.stimulus_duration

        def add_stimulus(t: float, dv: np.ndarray) -> np.ndarray:
            if t_on <= t < t_off:
                dv += stim
            return dv

        # The right-hand sides below are written in place on two fresh output arrays (no
        # other temporaries): ≈ 3× faster than the plain expressions at 2e4 DOFs, which
        # keeps the ionic step under 10 % of a step (benchmarks/cardiac.py).
        fused = None
        if s.ionic == "nagumo":
            k_of, a_of = (_ionic_value(n, s, ctx.mu) for n in ("nagumo_k", "nagumo_a"))

            def rhs(t, vv, w):
                # f = k v (1 − v)(v − a)
                dv = np.subtract(vv, a_of())
                dv *= vv
                dv *= np.subtract(1.0, vv)
                dv *= k_of()
                return add_stimulus(t, dv), np.zeros_like(w)

            states0, names = np.zeros((0, n_loc)), []
            info = {"ionic": "nagumo", "k": s.nagumo_k, "a": s.nagumo_a}
        else:
            k_of, a_of = (_ionic_value(n, s, ctx.mu) for n in ("ap_k", "ap_a"))
            e0, m1, m2, iT = s.ap_eps0, s.ap_mu1, s.ap_mu2, 1.0 / s.time_scale

            def rhs(t, vv, w):
                # dv = v [k (v − a)(1 − v) − r]/T,  dr = ε (−r − k v (v − a − 1))/T,
                # ε = ε0 + μ1 r/(v + μ2)
                k, aa, r = k_of(), a_of(), w[0]
                dv = np.subtract(vv, aa)
                tmp = np.subtract(1.0, vv)
                dv *= tmp
                dv *= k
                dv -= r
                dv *= vv
                dv *= iT
                eps = np.add(vv, m2, out=tmp)
                np.divide(r, eps, out=eps)
                eps *= m1
                eps += e0
                dw = np.empty((1, vv.size))
                dr = np.subtract(vv, aa + 1.0, out=dw[0])
                dr *= vv
                dr *= -k
                dr -= r
                dr *= eps
                dr *= iT
                return add_stimulus(t, dv), dw

            if s.ionic_kernel == "c":
                from hybrid.model.library.ionic_c import aliev_panfilov_step

                fused = aliev_panfilov_step(stim, t_on, t_off, k_of, a_of, e0, m1, m2,
                                            s.time_scale)
            states0, names = np.zeros((1, n_loc)), ["w"]
            info = {"ionic": "aliev_panfilov", "k": s.ap_k, "a": s.ap_a, "eps0": e0,
                    "mu1": m1, "mu2": m2, "time_scale_ms": s.time_scale}
        for n in s.ionic_parameters:   # in μ: the setting's value is not used
            info[n.split("_", 1)[1]] = f"mu[{n!r}]"
        info |= {"geometry": s.geometry, "chi_per_mm": s.chi, "C_m_uF_per_mm2": s.C_m,
                 "fibre_angle_deg": s.fibre_angle}
        return ReactionDiffusion(u=v, F=F, reaction_step=fused, initial=0.0,
                                 time=hm.TimeGrid(0.0, s.t_end, s.dt),
                                 reaction=rhs, states0=states0, state_names=names,
                                 threshold=s.threshold, splitting=s.splitting, ode=s.ode,
                                 substeps=s.substeps, info=info)
