"""Errors sparc raises on bad input. Each message names the option or layer at fault and what to do."""


class SparcError(ValueError):
    """Bad input to sparc: an option, a plan, a calibration batch or a layer that sparc cannot handle."""


class PlanMismatch(SparcError):
    """A plan was made for other weights than the ones it is applied to."""
