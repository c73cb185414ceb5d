"""Libraries every SipMesh process imports.

Importing the package first decides whether the sans-IO core runs compiled (mypyc) or as
pure Python (`shared.compiled`), before any module of that core is imported.
"""

from shared import compiled as _compiled

_compiled.install()
