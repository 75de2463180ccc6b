"""The one exception type for problems in user-supplied files."""
from ..errors import InputError


class BadInputError(InputError):
    """A user-supplied file (label CSV, description CSV, image) cannot be used.

    Messages always name the offending file and, for CSV problems, the 1-based
    line number (header = line 1) and the offending column or value, so a user
    can fix the file without reading our code. It subclasses ``ValueError`` so
    callers that already catch ``ValueError`` keep working.
    """
