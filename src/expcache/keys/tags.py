"""Every type tag byte of the key byte stream, with its meaning: the one table.

A key hashes a byte stream in which every value starts with one tag byte followed by a
fixed-size or length-prefixed payload (``len`` is 8 bytes little-endian, ``str`` is UTF-8 with
surrogatepass, length-prefixed; ``digest`` is 16 bytes of xxh3-128; ``ref`` is a class
reference: ``T`` or ``C`` below). Tags are unique across the whole stream, so a tag alone says
how its payload is read and two different values can never write the same bytes.
``tests/test_keys_tags.py`` checks that this table, the constants below and the bytes the
encoders write agree. Changing any row is a change of the key format: bump
``KEY_FORMAT_VERSION``.

====  ===================  ==============================================================
tag   name                 payload / meaning
====  ===================  ==============================================================
N     NONE                 None
0     FALSE                False, numpy.False_
1     TRUE                 True, numpy.True_
i     INT                  int in [-2**63, 2**63): 8 bytes signed (numpy integers too)
I     BIGINT               other int: len + two's complement bytes
f     FLOAT                float64 bits; every NaN written as one NaN (numpy.float64 too)
c     COMPLEX              two float64 (real, imag)
s     STR                  str (numpy.str_ too)
y     BYTES                len + bytes (numpy.bytes_ too)
Y     BYTEARRAY            len + bytes
m     MEMORYVIEW           format str, ndim, shape, len + bytes
.     ELLIPSIS             ...
_     NOT_IMPLEMENTED      NotImplemented
t     TUPLE                len + items
l     LIST                 len + items
d     DICT                 len + sorted (digest(key) + digest(value)): order-free
k     STR_KEY_DICT         a dict whose keys are all str: len + (str key, value) by key
O     ORDERED_DICT         OrderedDict: len + (key, value) in order: order counts
e     SET                  len + sorted digests of the items
E     FROZENSET            len + sorted digests of the items
j     INT_SET              a set of ints that fit 8 bytes: len + sorted 8-byte ints
J     INT_FROZENSET        the same for a frozenset
r     RANGE                start, stop, step as INT/BIGINT
z     SLICE                a TUPLE (start, stop, step)
a     DATE                 ISO str
w     DATETIME             ISO str, fold byte, tzinfo (NONE or TZINFO)
h     TIME                 ISO str, fold byte, tzinfo (NONE or TZINFO)
g     TIMEDELTA            days, seconds, microseconds (8 bytes each)
+     TZINFO               qualified class name str, str(tz)
X     DECIMAL              str(value)
v     FRACTION             numerator, denominator as INT/BIGINT
U     UUID                 16 bytes
p     PATH                 class name str, str(path)
P     PATTERN              compiled re: pattern (STR or BYTES), flags INT
~     ANNOTATION           typing construct: origin, then a TUPLE of its arguments
A     ARRAY                dtype str, ndim, shape, digest of the C-order little-endian bytes
@     OBJECT_ARRAY         dtype or descr str, ndim, shape, then a LIST of the elements
V     MASKED_ARRAY         ARRAY of data (masked entries zeroed), ARRAY of the mask
H     NDARRAY_SUBCLASS     memmap/matrix: qualified class name str, then the ARRAY
n     NUMPY_SCALAR         a numpy scalar Python has no type for (float32...): an ARRAY
2     SEED_SEQUENCE        entropy, spawn_key, pool_size, n_children_spawned
3     BIT_GENERATOR        qualified class name str, its state dict
4     GENERATOR            qualified class name str, its bit generator's state dict
5     RANDOM_STATE         qualified class name str, get_state(legacy=False)
Q     DATAFRAME            ncols, columns, index, per column: dtype str (+ categories), ARRAY
q     SERIES               (name, index), dtype str (+ categories), ARRAY
x     PANDAS_INDEX         LIST of names, dtype str (+ categories), ARRAY
L     PANDAS_MISSING       repr str of pandas.NaT / pandas.NA
6     PANDAS_TIME          qualified class name str, ISO str, str(tz)
K     CACHE_KEY            ref of the class, then the value of __cache_key__()
u     ENUM                 ref of the enum class, member name str
D     DATACLASS            ref, len, per field: name str + value
G     ESTIMATOR            unfitted get_params() estimator: ref, then get_params(deep=False)
Z     BUILTIN_SUBCLASS     subclass of a builtin container/scalar: ref, then the base value
W     WRAPPED              a callable object with __wrapped__: what it wraps
S     STATELESS            an instance with no state at all: ref
R     REGISTERED           register_encoder(): qualified type name str, then the stand-in
!     PICKLED              pickle_args: len + pickle protocol 4 bytes (not canonical)
o     TYPE_ONLY            closure/global known not to affect results: qualified type name
T     TYPE_NAME            a class keyed by name (stdlib, installed, C): qualified name str
C     CLASS                a class of the user's code: qualified name str + content digest
>     CLASS_BACKREF        a class whose digest is being computed: qualified name str
#     CODE                 code object: counts and flags, bytecode, name tuples, consts
F     FUNCTION             a function of the user's code: qualified name str + digest
B     NAMED_CALLABLE       a function of stdlib/installed code or a C callable: name str
<     FUNCTION_BACKREF     a function whose identity is being computed: qualified name str
b     BOUND_METHOD         the function, then its __self__
%     PARTIAL              the function, then args TUPLE and keywords DICT
M     MODULE               module name str
-     UNASSIGNED_CELL      a closure cell not assigned yet
|     PART                 one part of an identity: name str + digest (sorted by name)
=     ARG                  one bound parameter of a call: name str, then its value
*     VAR_POSITIONAL       the *args of a call: a TUPLE
&     VAR_KEYWORD          the **kwargs of a call: a DICT
====  ===================  ==============================================================
"""

from __future__ import annotations

from typing import Final

NONE: Final = b"N"
FALSE: Final = b"0"
TRUE: Final = b"1"
INT: Final = b"i"
BIGINT: Final = b"I"
FLOAT: Final = b"f"
COMPLEX: Final = b"c"
STR: Final = b"s"
BYTES: Final = b"y"
BYTEARRAY: Final = b"Y"
MEMORYVIEW: Final = b"m"
ELLIPSIS: Final = b"."
NOT_IMPLEMENTED: Final = b"_"
TUPLE: Final = b"t"
LIST: Final = b"l"
DICT: Final = b"d"
STR_KEY_DICT: Final = b"k"
ORDERED_DICT: Final = b"O"
SET: Final = b"e"
FROZENSET: Final = b"E"
INT_SET: Final = b"j"
INT_FROZENSET: Final = b"J"
RANGE: Final = b"r"
SLICE: Final = b"z"
DATE: Final = b"a"
DATETIME: Final = b"w"
TIME: Final = b"h"
TIMEDELTA: Final = b"g"
TZINFO: Final = b"+"
DECIMAL: Final = b"X"
FRACTION: Final = b"v"
UUID: Final = b"U"
PATH: Final = b"p"
PATTERN: Final = b"P"
ANNOTATION: Final = b"~"
ARRAY: Final = b"A"
OBJECT_ARRAY: Final = b"@"
MASKED_ARRAY: Final = b"V"
NDARRAY_SUBCLASS: Final = b"H"
NUMPY_SCALAR: Final = b"n"
SEED_SEQUENCE: Final = b"2"
BIT_GENERATOR: Final = b"3"
GENERATOR: Final = b"4"
RANDOM_STATE: Final = b"5"
DATAFRAME: Final = b"Q"
SERIES: Final = b"q"
PANDAS_INDEX: Final = b"x"
PANDAS_MISSING: Final = b"L"
PANDAS_TIME: Final = b"6"
CACHE_KEY: Final = b"K"
ENUM: Final = b"u"
DATACLASS: Final = b"D"
ESTIMATOR: Final = b"G"
BUILTIN_SUBCLASS: Final = b"Z"
WRAPPED: Final = b"W"
STATELESS: Final = b"S"
REGISTERED: Final = b"R"
PICKLED: Final = b"!"
TYPE_ONLY: Final = b"o"
TYPE_NAME: Final = b"T"
CLASS: Final = b"C"
CLASS_BACKREF: Final = b">"
CODE: Final = b"#"
FUNCTION: Final = b"F"
NAMED_CALLABLE: Final = b"B"
FUNCTION_BACKREF: Final = b"<"
BOUND_METHOD: Final = b"b"
PARTIAL: Final = b"%"
MODULE: Final = b"M"
UNASSIGNED_CELL: Final = b"-"
PART: Final = b"|"
ARG: Final = b"="
VAR_POSITIONAL: Final = b"*"
VAR_KEYWORD: Final = b"&"


def table() -> dict[str, bytes]:
    """Name -> tag byte of every constant above (for the consistency test and for tools)."""
    return {k: v for k, v in globals().items() if k.isupper() and isinstance(v, bytes)}
