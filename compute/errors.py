"""The errors the compute layer raises on purpose.

They are :class:`~skyledger.schema.errors.SkyledgerError`\\ s, so the command line prints
their message as one ``error: ...`` line and exits 1 instead of showing a traceback.
A run that fails with one records the same message in ``run.error``.  Each message says
what was wrong and what to do about it.
"""

from __future__ import annotations

from skyledger.schema.errors import RunStateError, SkyledgerError

__all__ = ["ComputeError", "ComputeInputError", "ModelFileError", "RunStateError"]

# RunStateError lives with the run service in schema (ingest records runs too); it is
# re-exported here because compute is where users meet it.


class ComputeError(SkyledgerError):
    """Base class of every error the compute layer (science packages, task framework)
    raises on purpose."""


class ComputeInputError(ComputeError, ValueError):
    """Raised when a compute function is given arrays or names it cannot use: arrays of
    the wrong shape, wavelengths that do not increase, an unknown method, rotation-curve
    model or extinction curve, a line that does not belong to the ion or doublet asked
    for.  The message names the input and what is accepted: correct the call or the task
    parameters.  It is a ``ValueError`` too, as these errors were before, so callers that
    catch ``ValueError`` keep working."""


class ModelFileError(ComputeError):
    """Raised when a data file a computation is built on cannot be used: no stellar
    template files, or templates on different wavelength grids.  The shipped files are
    in the installed package (``skyledger/compute/templates``): give a consistent set of
    files, or reinstall skyledger if the shipped ones are missing or were changed."""
