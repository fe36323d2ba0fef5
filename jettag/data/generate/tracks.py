"""Charged-track parameters at the perigee and a parametrised track-resolution model.

A charged particle produced at ``(x, y, z)`` (mm) with momentum ``(px, py, pz)`` (GeV)
moves on a helix around the beam (z) axis in a solenoid field ``B`` (tesla); with ``B = 0``
on a straight line. Its perigee is the point of closest approach (PCA) of the
trajectory to the beam line, here also the primary vertex (Pythia puts the hard
interaction at the origin and we add no beam spot). Conventions (the sign convention
of Delphes' ``ParticlePropagator``, ``d0 = (x py - y px) / pT`` at the PCA):

- ``phi0`` is the azimuth of the momentum at the PCA;
- ``d0 = x_pca sin(phi0) - y_pca cos(phi0)`` is the signed transverse impact parameter,
  so that ``(x_pca, y_pca) = d0 (sin phi0, -cos phi0)``; its sign is that of the z
  component of ``r_pca x p``;
- ``z0`` is the z coordinate of the PCA (longitudinal impact parameter);
- the PCA three-vector is ``(x_pca, y_pca, z0)``.

Resolution model: each parameter ``X`` in (``d0``, ``z0 sin(theta)``, ``phi0``) has
``sigma_X(pT) = a_X (+) b_X / pT`` (sum in quadrature), the form of the ATLAS
Inner Detector performance expectation ``sigma_X(inf) (1 (+) p_X / pT)`` (ATLAS
Collaboration, JINST 3 (2008) S08003, expected track-parameter resolutions for
0.25 < |eta| < 0.5): d0: 10 um and p_X = 14 GeV, so ``b = 140 um GeV``; z0 sin(theta):
91 um and 2.3 GeV; phi0: 70 urad and 39 GeV. These are the pre-IBL (Run 1) expectations;
pass other numbers through :class:`TrackResolution` to model another tracker.
Measured values are Gaussian-smeared independently; the covariance of the measured PCA
is the linear propagation of ``diag(sigma_d0^2, sigma_phi0^2, sigma_z0^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jettag.data.generate._engine import wrap_phi

__all__ = ["TrackResolution", "pca_covariance", "perigee", "smear"]

# Helix radius in mm of a unit-charge track: R = pT / (C * B) with pT in GeV, B in tesla.
_C_MM = 0.299792458e-3


@dataclass(frozen=True)
class TrackResolution:
    """Parameters ``(a, b)`` of ``sigma(pT) = a (+) b / pT`` for each perigee parameter.

    Args:
        d0: transverse impact parameter, ``(mm, mm GeV)``.
        z0_sin_theta: ``z0 sin(theta)``, ``(mm, mm GeV)``; ``sigma_z0 = sigma / sin(theta)``.
        phi0: azimuth at the perigee, ``(rad, rad GeV)``.
    """

    d0: tuple[float, float] = (0.010, 0.140)
    z0_sin_theta: tuple[float, float] = (0.091, 0.209)
    phi0: tuple[float, float] = (7.0e-5, 2.73e-3)

    def sigmas(self, pt: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sigma_d0, sigma_z0, sigma_phi0)`` for tracks of transverse momentum ``pt`` (GeV)."""
        pt = np.asarray(pt, dtype=np.float64)
        sin_theta = pt / np.hypot(pt, pz)

        def sigma(ab: tuple[float, float]) -> np.ndarray:
            return np.hypot(ab[0], ab[1] / pt)

        return sigma(self.d0), sigma(self.z0_sin_theta) / sin_theta, sigma(self.phi0)


def perigee(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    charge: np.ndarray,
    bfield: float = 2.0,
) -> dict[str, np.ndarray]:
    """True perigee parameters of charged tracks (exact helix; straight line when ``bfield=0``).

    Args:
        x, y, z: production vertex (mm).
        px, py, pz: momentum at production (GeV).
        charge: in units of e; must be non-zero.
        bfield: solenoid field along +z (tesla).

    Returns:
        dict with ``d0``, ``z0``, ``phi0`` and the PCA ``pca_x``, ``pca_y``, ``pca_z``
        (``pca_z == z0``), each shaped like the inputs.
    """
    x, y, z, px, py, pz, charge = (
        np.asarray(a, dtype=np.float64) for a in (x, y, z, px, py, pz, charge)
    )
    pt = np.hypot(px, py)
    phi = np.arctan2(py, px)
    if bfield == 0.0:
        # Straight line: step back (or forward) along the transverse direction.
        s = -(x * np.cos(phi) + y * np.sin(phi))
        phi0 = phi
        xp, yp = x + s * np.cos(phi), y + s * np.sin(phi)
    else:
        q = np.sign(charge)
        radius = pt / (_C_MM * np.abs(charge) * bfield)
        # A positive track in a field along +z turns clockwise; the centre lies to its right.
        cx = x + q * radius * np.sin(phi)
        cy = y - q * radius * np.cos(phi)
        dist = np.hypot(cx, cy)
        # Momentum direction where the radius vector points at (or away from) the origin.
        phi0 = np.arctan2(q * cx, -q * cy)
        turn = wrap_phi(phi0 - phi)
        s = -q * radius * turn  # signed transverse path length from production to PCA
        scale = 1.0 - radius / dist
        xp, yp = cx * scale, cy * scale
    d0 = xp * np.sin(phi0) - yp * np.cos(phi0)
    z0 = z + s * pz / pt
    return {"d0": d0, "z0": z0, "phi0": wrap_phi(phi0), "pca_x": xp, "pca_y": yp, "pca_z": z0}


def smear(
    true: dict[str, np.ndarray],
    pt: np.ndarray,
    pz: np.ndarray,
    resolution: TrackResolution,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Measured perigee parameters, their errors and the measured PCA with its covariance.

    Tracks are smeared one after the other from ``rng`` (three normal draws each), so
    smearing tracks in one call or in several consecutive calls gives the same values.

    Returns:
        dict with ``d0``, ``z0``, ``phi0`` (smeared), ``d0err``, ``z0err``, ``phi0err``,
        ``pca_x``, ``pca_y``, ``pca_z`` (from the smeared parameters) and the covariance
        entries ``cov_xx, cov_xy, cov_xz, cov_yy, cov_yz, cov_zz`` (mm^2).
    """
    sd0, sz0, sphi = resolution.sigmas(pt, pz)
    # One (track, parameter) draw, track after track: the random sequence then does not
    # depend on how the tracks are split into calls.
    noise = rng.standard_normal((np.size(sd0), 3)).reshape((*np.shape(sd0), 3))
    d0 = true["d0"] + sd0 * noise[..., 0]
    z0 = true["z0"] + sz0 * noise[..., 1]
    phi0 = wrap_phi(true["phi0"] + sphi * noise[..., 2])
    out = {
        "d0": d0,
        "z0": z0,
        "phi0": phi0,
        "d0err": sd0,
        "z0err": sz0,
        "phi0err": sphi,
        "pca_x": d0 * np.sin(phi0),
        "pca_y": -d0 * np.cos(phi0),
        "pca_z": z0,
    }
    out.update(pca_covariance(d0, phi0, sd0, sphi, sz0))
    return out


def pca_covariance(
    d0: np.ndarray,
    phi0: np.ndarray,
    sigma_d0: np.ndarray,
    sigma_phi0: np.ndarray,
    sigma_z0: np.ndarray,
) -> dict[str, np.ndarray]:
    """Covariance of the PCA ``(d0 sin phi0, -d0 cos phi0, z0)`` to first order.

    With ``n = (sin phi0, -cos phi0)`` (transverse, perpendicular to the track) and
    ``t = (cos phi0, sin phi0)`` (along the track),
    ``C = sigma_d0^2 n n^T + (d0 sigma_phi0)^2 t t^T + sigma_z0^2 z z^T``.
    """
    s, c = np.sin(phi0), np.cos(phi0)
    a = sigma_d0**2
    b = (d0 * sigma_phi0) ** 2
    zero = np.zeros_like(a)
    return {
        "cov_xx": a * s * s + b * c * c,
        "cov_xy": -a * s * c + b * s * c,
        "cov_xz": zero,
        "cov_yy": a * c * c + b * s * s,
        "cov_yz": zero.copy(),
        "cov_zz": np.asarray(sigma_z0, dtype=np.float64) ** 2,
    }
