"""ADQL 2.1 -> PostgreSQL, for the TAP service (docs/adql.md).

The text is parsed by sqlglot with a dialect of its own (sqlglot's generic grammar plus
ADQL's ``TOP``; measured against queryparser-python3 in docs/adql.md) and rewritten on the
tree:

- ``TOP n`` of the outermost query leaves the SQL (:attr:`Translation.top`: the service
  applies ``min(TOP, MAXREC)`` and reports overflow); a ``TOP`` inside a subquery becomes
  its ``LIMIT``;
- regular identifiers are case-insensitive in ADQL: they become lower case, and every
  identifier is quoted in the output, so a delimited ``"Ra"`` stays what it says and no
  column name collides with a PostgreSQL keyword; ``TAP_SCHEMA`` names are
  case-insensitive even when quoted;
- ADQL's functions become PostgreSQL's (``LOG`` is the natural logarithm, ``TRUNCATE`` and
  ``ROUND`` with decimals go through numeric, ...); a function ADQL does not define is
  refused, naming those it does;
- geometry values are ``float8[]`` as DALI writes them (point ``[ra, dec]``, circle
  ``[ra, dec, r]``, polygon ``[ra1, dec1, ...]``; ``BOX`` is a polygon) and the predicates
  are SQL functions in schema ``catalog`` (migration 0022). A cone on ``catalog.spectra``
  (``CONTAINS(POINT(t.ra, t.dec), CIRCLE(...)) = 1``, ``DISTANCE(...) < r``, a constant
  BOX or POLYGON through its enclosing cone) gets an index-backed pre-selection through
  ``catalog.cone_search_spectra``; other tables get a declination band.

Nothing here is a security boundary: the SQL runs through schema/readpath.py as a reader,
which is. The translator refuses what is not one ADQL query so that the error is clear.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect, NormalizationStrategy
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Tokenizer, TokenType

from skyledger.schema.errors import QueryError

__all__ = ["Adql", "AdqlError", "Translation", "translate"]


class AdqlError(QueryError):
    """The ADQL text is not a query this service can translate; the message says what to fix."""


@dataclass
class Translation:
    """One ADQL query as PostgreSQL for the reader.

    ``sql`` has no ``TOP``: ``top`` holds it. ``sources[i]`` is the ("schema.table",
    "column") output column ``i`` comes from unchanged (for its unit, UCD and
    description), else None. ``xtypes[i]`` is the DALI xtype of a geometry output
    ("point", "circle", "polygon"), else None. Both are empty when the output columns are
    not known (a ``*`` translated without ``columns_of``).
    """

    sql: str
    top: int | None
    sources: list[tuple[str, str] | None] = field(default_factory=list)
    xtypes: list[str | None] = field(default_factory=list)


class Adql(Dialect):
    """sqlglot's generic grammar with ``TOP``; identifiers fold to lower case."""

    NORMALIZATION_STRATEGY = NormalizationStrategy.LOWERCASE
    # PostgreSQL's order: no explicit NULLS FIRST/LAST is written into ORDER BY.
    NULL_ORDERING = "nulls_are_large"

    class Tokenizer(Tokenizer):
        KEYWORDS = {**Tokenizer.KEYWORDS, "TOP": TokenType.TOP}  # noqa: RUF012 (sqlglot's API)


#: Schemas whose names (and their tables' names) are case-insensitive even when quoted.
TAP_SCHEMA = "tap_schema"

#: ADQL's functions by name, as the message of an unknown function lists them.
ADQL_FUNCTIONS = (
    "ABS CEILING DEGREES EXP FLOOR LOG LOG10 MOD PI POWER RADIANS RAND ROUND SQRT TRUNCATE "
    "ACOS ASIN ATAN ATAN2 COS COT SIN TAN LOWER UPPER COALESCE "
    "COUNT SUM AVG MIN MAX "
    "POINT CIRCLE BOX POLYGON CONTAINS INTERSECTS DISTANCE COORD1 COORD2 COORDSYS AREA CENTROID"
)

# sqlglot parses most ADQL functions into typed nodes; these are the ones ADQL defines
# (SIGN is not ADQL but harmless and common). Anything else that is a function is refused.
_TYPED_FUNCTIONS = (
    exp.Abs, exp.Ceil, exp.Degrees, exp.Exp, exp.Floor, exp.Log, exp.Pow, exp.Pi, exp.Radians, exp.Rand,
    exp.Round, exp.Sqrt, exp.Trunc, exp.Acos, exp.Asin, exp.Atan, exp.Atan2, exp.Cos, exp.Cot, exp.Sin,
    exp.Tan, exp.Lower, exp.Upper, exp.Coalesce, exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max, exp.Sign,
    exp.Cast, exp.Case, exp.If, exp.Exists, exp.Contains,
)
_GEOMETRY_CONSTRUCTORS = {"POINT", "CIRCLE", "BOX", "POLYGON"}
_GEOMETRY_FUNCTIONS = {"CONTAINS", "INTERSECTS", "DISTANCE", "COORD1", "COORD2", "COORDSYS", "AREA", "CENTROID"}
_REFUSED_GEOMETRY = {
    "REGION": "REGION (STC-S text) is not supported: write the shape with CIRCLE, BOX or POLYGON",
    "IN_UNIT": "IN_UNIT is not supported: convert with arithmetic (the units are in TAP_SCHEMA.columns)",
}
#: ADQL's CAST target types.
_CAST_TYPES = {
    exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT, exp.DataType.Type.FLOAT,
    exp.DataType.Type.DOUBLE, exp.DataType.Type.CHAR, exp.DataType.Type.VARCHAR, exp.DataType.Type.TIMESTAMP,
}

# Pre-selections are widened by this relative margin so that they are never narrower
# than the exact test that follows them (the two compute distances in different orders).
_MARGIN = 1e-9

_FLOAT8_ARRAY = exp.DataType.build("double precision[]", dialect="postgres")


def translate(adql: str, columns_of: Callable[[str], list[str]] | None = None) -> Translation:
    """Translate one ADQL query to PostgreSQL for the reader; :class:`AdqlError` when it is not one.

    ``columns_of("schema.table")`` lists a table's columns in order (the service passes
    one backed by ``tap_schema.columns``): with it a ``*`` in the outer select is written
    out, so that ``sources`` and ``xtypes`` describe every output column, and an
    unqualified column of a join is traced to its table. It returns [] for a table it does
    not know.
    """
    tree = _parse(adql)
    _check_nodes(tree)
    _normalize_identifiers(tree)
    top = _take_top(tree)
    if columns_of is not None:
        _expand_star(tree, columns_of)
    outer = _first_select(tree)
    has_star = any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
                   for e in outer.expressions)
    if has_star:
        sources: list[tuple[str, str] | None] = []
        xtypes: list[str | None] = []
    else:
        sources = [_source_of(outer, e, columns_of) for e in outer.expressions]
        xtypes = [_xtype(e) for e in outer.expressions]
    _map_functions(tree)
    for select in list(tree.find_all(exp.Select)):
        _add_sky_preselection(select, columns_of)
    tree = _rewrite_geometry(tree)
    sql = tree.sql(dialect="postgres", identify=True, normalize_functions="lower")
    return Translation(sql=sql, top=top, sources=sources, xtypes=xtypes)


# -- parsing ---------------------------------------------------------------------------------


def _clean(description: str) -> str:
    # sqlglot names tokens as <Token token_type: TokenType.WHERE, text: WHERE, ...> and
    # expressions by their Python class.
    description = re.sub(r"<Token token_type: TokenType\.\w+, text: (.*?), line: .*?>", r"'\1'", description)
    return re.sub(r"Required keyword: '\w+' missing for <class '[\w.]+\.(\w+)'>", r"incomplete \1 expression", description)


def _parse(adql: str) -> exp.Query:
    if not adql or not adql.strip():
        raise AdqlError("the query is empty: send one ADQL SELECT statement")
    try:
        tokens = Adql().tokenize(adql)
    except TokenError as err:
        raise AdqlError(
            "ADQL syntax error: a string or quoted identifier is not closed (a ' or \" without its partner)"
            f" near: {str(err).removeprefix('Error tokenizing ')[-60:]}"
        ) from err
    if tokens and tokens[0].token_type not in (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN):
        raise AdqlError(
            f"ADQL syntax error at line {tokens[0].line}, column {tokens[0].col}: a query starts with SELECT, "
            f"not {tokens[0].text!r} (only SELECT queries are accepted here)"
        )
    for i, token in enumerate(tokens):
        where = f"line {token.line}, column {token.col}"
        if token.token_type == TokenType.TOP and (
            i + 1 == len(tokens) or tokens[i + 1].token_type != TokenType.NUMBER or not tokens[i + 1].text.isdigit()
        ):
            raise AdqlError(f"ADQL syntax error at {where}: TOP needs a whole number of rows (SELECT TOP 100 ...)")
        if token.token_type == TokenType.DCOLON:
            raise AdqlError(f"ADQL syntax error at {where}: '::' is PostgreSQL's cast; write CAST(x AS type)")
        if token.token_type == TokenType.LIMIT:
            raise AdqlError(f"ADQL syntax error at {where}: ADQL has no LIMIT; write SELECT TOP n ...")
        if token.token_type in (TokenType.PLACEHOLDER, TokenType.PARAMETER):
            raise AdqlError(f"ADQL syntax error at {where}: {token.text!r} is not ADQL (no parameters here)")
    try:
        statements = [s for s in sqlglot.parse(adql, read=Adql) if s is not None]
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        if first.get("line"):
            raise AdqlError(
                f"ADQL syntax error at line {first['line']}, column {first['col']}: {_clean(first['description'])}"
                f" (near {first.get('highlight', '')!r})"
            ) from err
        raise AdqlError(f"ADQL syntax error: {_clean(str(err))}") from err
    except sqlglot.errors.SqlglotError as err:
        raise AdqlError(f"ADQL syntax error: {_clean(str(err))}") from err
    if len(statements) != 1:
        raise AdqlError(f"send one ADQL query, not {len(statements)} statements (remove the ';' between them)")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper() if tree.key != "command" else str(tree.this).upper()
        raise AdqlError(f"only SELECT queries are accepted here; this is a {kind} statement")
    return tree


def _check_nodes(tree: exp.Expression) -> None:
    """Refuse functions and casts that ADQL does not define."""
    for node in tree.walk():
        if isinstance(node, exp.Anonymous):
            name = str(node.this).upper()
            if name in _REFUSED_GEOMETRY:
                raise AdqlError(_REFUSED_GEOMETRY[name])
            if name not in _GEOMETRY_CONSTRUCTORS | _GEOMETRY_FUNCTIONS:
                raise AdqlError(f"{node.this}() is not an ADQL function; the functions are: {ADQL_FUNCTIONS}")
        elif isinstance(node, exp.Func) and not isinstance(node, (*_TYPED_FUNCTIONS, exp.Connector)):
            raise AdqlError(f"{node.sql_name()}() is not an ADQL function; the functions are: {ADQL_FUNCTIONS}")
        if isinstance(node, exp.Rand) and node.this is not None:
            raise AdqlError("RAND(seed) is not supported (a query's random numbers cannot be seeded); write RAND()")
        if isinstance(node, exp.Cast) and node.to.this not in _CAST_TYPES:
            raise AdqlError(
                f"CAST to {node.to.sql()} is not ADQL; cast to SMALLINT, INTEGER, BIGINT, REAL, DOUBLE PRECISION, "
                "CHAR(n), VARCHAR(n) or TIMESTAMP"
            )


def _normalize_identifiers(tree: exp.Expression) -> None:
    for ident in tree.find_all(exp.Identifier):
        if not ident.quoted:
            ident.set("this", ident.this.lower())
    # TAP_SCHEMA and its tables by any spelling, quoted or not (TAP 1.1 names them upper case).
    for table in tree.find_all(exp.Table):
        if table.args.get("db") is not None and table.db.lower() == TAP_SCHEMA:
            table.args["db"].set("this", TAP_SCHEMA)
            table.this.set("this", table.name.lower())
    for column in tree.find_all(exp.Column):
        if column.args.get("db") is not None and column.args["db"].name.lower() == TAP_SCHEMA:
            column.args["db"].set("this", TAP_SCHEMA)
            column.args["table"].set("this", column.table.lower())


def _literal_int(node: exp.Expression | None) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string and re.fullmatch(r"\d+", node.this):
        return int(node.this)
    return None


def _take_top(tree: exp.Query) -> int | None:
    """The outer query's TOP, removed from the tree; checks every TOP is a count."""
    for select in tree.find_all(exp.Select):
        limit = select.args.get("limit")
        if limit is not None and _literal_int(limit.expression) is None:
            raise AdqlError(f"TOP needs a whole number of rows, not {limit.expression.sql()}")
    if isinstance(tree, exp.Select) and tree.args.get("limit") is not None:
        top = _literal_int(tree.args["limit"].expression)
        tree.set("limit", None)
        return top
    return None


def _first_select(tree: exp.Query) -> exp.Select:
    """The select whose columns name the output (the first branch of a UNION)."""
    node: exp.Expression = tree
    while isinstance(node, exp.SetOperation):
        node = node.this
    while isinstance(node, exp.Subquery):
        node = node.this
    assert isinstance(node, exp.Select), node
    return node


# -- tables in scope, sources ------------------------------------------------------------------


def _scope_tables(select: exp.Select) -> list[exp.Expression]:
    """The FROM items of one select (tables and subqueries), in order."""
    items: list[exp.Expression] = []
    from_ = select.args.get("from_") or select.args.get("from")
    if from_ is not None:
        items.append(from_.this)
    for join in select.args.get("joins") or []:
        items.append(join.this)
    return items


def _table_key(table: exp.Table) -> str:
    return f"{table.db}.{table.name}" if table.db else table.name


def _find_item(select: exp.Select, qualifier: str) -> exp.Expression | None:
    for item in _scope_tables(select):
        if item.alias_or_name == qualifier:
            return item
    return None


def _output_names(item: exp.Expression, columns_of) -> list[str]:
    if isinstance(item, exp.Table):
        return columns_of(_table_key(item)) if columns_of else []
    if isinstance(item, exp.Subquery) and isinstance(item.this, exp.Query):
        return [e.alias_or_name for e in _first_select(item.this).expressions]
    return []


def _column_item(select: exp.Select, column: exp.Column, columns_of) -> exp.Expression | None:
    """The FROM item a column belongs to, or None when that cannot be told."""
    if column.table:
        return _find_item(select, column.table)
    items = _scope_tables(select)
    if len(items) == 1:
        return items[0]
    owners = [item for item in items if column.name in _output_names(item, columns_of)]
    return owners[0] if owners else None


def _source_of(select: exp.Select, expression: exp.Expression, columns_of, depth: int = 0):
    node = expression.this if isinstance(expression, exp.Alias) else expression
    if not isinstance(node, exp.Column) or depth > 20:
        return None
    item = _column_item(select, node, columns_of)
    if isinstance(item, exp.Table):
        return (_table_key(item), node.name)
    if isinstance(item, exp.Subquery) and isinstance(item.this, exp.Query):
        inner = _first_select(item.this)
        for candidate in inner.expressions:
            if candidate.alias_or_name == node.name:
                return _source_of(inner, candidate, columns_of, depth + 1)
    return None


def _expand_star(tree: exp.Query, columns_of) -> None:
    """Write out * and t.* of the outer select, when every table's columns are known."""
    outer = _first_select(tree)
    expanded: list[exp.Expression] = []
    for e in outer.expressions:
        if isinstance(e, exp.Star):
            items = _scope_tables(outer)
        elif isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
            item = _find_item(outer, e.table)
            items = [item] if item is not None else []
        else:
            expanded.append(e)
            continue
        names = [(item, _output_names(item, columns_of)) for item in items]
        if not items or any(not n for _, n in names):
            expanded.append(e)  # unknown table: PostgreSQL expands it, sources stay unknown
            continue
        using = {i.name for j in outer.args.get("joins") or [] for i in j.args.get("using") or []}
        seen_using: set[str] = set()
        for item, cols in names:
            for col in cols:
                if isinstance(e, exp.Star) and col in using:
                    # USING columns appear once in SELECT *, from the first table.
                    if col in seen_using:
                        continue
                    seen_using.add(col)
                expanded.append(exp.column(col, table=item.alias_or_name, quoted=True))
    outer.set("expressions", expanded)


# -- functions --------------------------------------------------------------------------------


def _numeric(node: exp.Expression) -> exp.Expression:
    return exp.cast(node, exp.DataType.build("numeric"))


def _double(node: exp.Expression) -> exp.Expression:
    return exp.cast(node, exp.DataType.build("double precision", dialect="postgres"))


def _map_function(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Log):
        if node.expression is None:  # ADQL LOG(x) is the natural logarithm
            return exp.Ln(this=node.this)
        if isinstance(node.this, exp.Literal) and node.this.this == "10":  # LOG10(x)
            return exp.Anonymous(this="log10", expressions=[node.expression])
        raise AdqlError("LOG takes one argument (the natural logarithm); LOG10 is the decimal one")
    if isinstance(node, (exp.Round, exp.Trunc)) and node.args.get("decimals") is not None:
        # PostgreSQL rounds to n decimals only in numeric; ADQL gives a double back.
        name = "round" if isinstance(node, exp.Round) else "trunc"
        return _double(exp.Anonymous(this=name, expressions=[_numeric(node.this), node.args["decimals"]]))
    if isinstance(node, exp.Trunc):
        return exp.Anonymous(this="trunc", expressions=[node.this])
    if isinstance(node, exp.Mod):
        # PostgreSQL's mod has no double precision form.
        return _double(exp.Anonymous(this="mod", expressions=[_numeric(node.this), _numeric(node.expression)]))
    return node


def _map_functions(tree: exp.Expression) -> None:
    for node in list(tree.walk()):
        if isinstance(node, (exp.Log, exp.Round, exp.Trunc, exp.Mod)):
            node.replace(_map_function(node))


# -- geometry -----------------------------------------------------------------------------------


@dataclass
class Shape:
    """A geometry value by its scalar parts: point (ra, dec), circle (ra, dec, r), polygon (ra1, dec1, ...)."""

    kind: str
    parts: list[exp.Expression]

    def array(self) -> exp.Expression:
        return exp.cast(exp.Array(expressions=[p.copy() for p in self.parts]), _FLOAT8_ARRAY.copy())


def _fname(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.this).upper()
    if isinstance(node, exp.Contains):
        return "CONTAINS"
    return None


def _args(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Contains):
        return [node.this, node.expression]
    return list(node.expressions)


def _strip_coordsys(name: str, args: list[exp.Expression]) -> list[exp.Expression]:
    if args and isinstance(args[0], exp.Literal) and args[0].is_string:
        system = args[0].this.strip()
        if system and system.split()[0].upper() != "ICRS":
            raise AdqlError(
                f"{name}: coordinate system {system!r} is not supported; positions here are ICRS: "
                f"write {name}('ICRS', ...) or {name}('', ...)"
            )
        return args[1:]
    return args


def _shape(node: exp.Expression) -> Shape | None:
    """The shape a geometry constructor builds, or None when the node is not one."""
    name = _fname(node)
    if name not in _GEOMETRY_CONSTRUCTORS:
        return None
    args = _strip_coordsys(name, _args(node))
    text = node.sql()
    # ADQL 2.1 also lets a POINT stand for a centre or a vertex.
    flat: list[exp.Expression] = []
    for a in args:
        inner = _shape(a)
        if inner is not None:
            if inner.kind != "point":
                raise AdqlError(f"{text}: a {inner.kind} cannot be an argument of {name}; give a POINT or numbers")
            flat.extend(inner.parts)
        elif _fname(a) in _GEOMETRY_FUNCTIONS and _fname(a) not in ("COORD1", "COORD2", "DISTANCE", "AREA"):
            raise AdqlError(f"{text}: {_fname(a)} does not give a number")
        else:
            flat.append(a)
    if name == "POINT":
        if len(flat) != 2:
            raise AdqlError(f"{text}: POINT needs ra and dec (POINT('ICRS', ra, dec))")
        _check_dec(text, flat[1])
        return Shape("point", flat)
    if name == "CIRCLE":
        if len(flat) != 3:
            raise AdqlError(f"{text}: CIRCLE needs a centre and a radius (CIRCLE('ICRS', ra, dec, radius_deg))")
        _check_dec(text, flat[1])
        radius = _const(flat[2])
        if radius is not None and not 0 <= radius <= 180:
            raise AdqlError(f"{text}: the radius is {radius:g} deg; give one between 0 and 180 degrees")
        return Shape("circle", flat)
    if name == "BOX":
        if len(flat) != 4:
            raise AdqlError(f"{text}: BOX needs a centre, a width and a height (BOX('ICRS', ra, dec, width, height))")
        ra, dec, w, h = (exp.paren(p, copy=False) for p in flat)
        half_w, half_h = exp.Div(this=w, expression=exp.Literal.number(2)), exp.Div(this=h, expression=exp.Literal.number(2))
        corners = [(exp.Sub, exp.Sub), (exp.Add, exp.Sub), (exp.Add, exp.Add), (exp.Sub, exp.Add)]
        parts: list[exp.Expression] = []
        for op_ra, op_dec in corners:
            parts.append(_fold(op_ra(this=ra.copy(), expression=half_w.copy())))
            parts.append(_fold(op_dec(this=dec.copy(), expression=half_h.copy())))
        return Shape("polygon", parts)
    if len(flat) < 6 or len(flat) % 2:
        raise AdqlError(f"{text}: POLYGON needs at least three vertices, each an ra and a dec")
    for dec in flat[1::2]:
        _check_dec(text, dec)
    return Shape("polygon", flat)


def _check_dec(text: str, dec: exp.Expression) -> None:
    value = _const(dec)
    if value is not None and not -90 <= value <= 90:
        raise AdqlError(f"{text}: declination {value:g} deg is outside [-90, 90]")


def _const(node: exp.Expression) -> float | None:
    """The value of a constant numeric expression, else None."""
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Paren):
        return _const(node.this)
    if isinstance(node, exp.Neg):
        v = _const(node.this)
        return None if v is None else -v
    if isinstance(node, exp.Pi):
        return math.pi
    ops = {exp.Add: float.__add__, exp.Sub: float.__sub__, exp.Mul: float.__mul__, exp.Div: float.__truediv__}
    for kind, fn in ops.items():
        if type(node) is kind:
            a, b = _const(node.this), _const(node.expression)
            if a is None or b is None or (kind is exp.Div and b == 0):
                return None
            return fn(a, b)
    return None


def _number(value: float) -> exp.Expression:
    literal = exp.Literal.number(repr(float(abs(value))))
    return exp.Neg(this=literal) if value < 0 else literal


def _fold(node: exp.Expression) -> exp.Expression:
    value = _const(node)
    return node if value is None else _number(value)


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=f"catalog.{name}", expressions=list(args))


def _predicate(name: str, a: Shape, b: Shape, text: str) -> exp.Expression:
    """CONTAINS(a, b) (a inside b) or INTERSECTS(a, b) as a boolean expression."""
    if name == "INTERSECTS":
        if b.kind == "point" and a.kind != "point":
            a, b = b, a
        if a.kind == "point":
            name = "CONTAINS"
        elif a.kind == "circle" and b.kind == "circle":
            return _call("adql_circles_intersect", *a.parts, *b.parts)
        elif {a.kind, b.kind} == {"circle", "polygon"}:
            poly, circle = (a, b) if a.kind == "polygon" else (b, a)
            return _call("adql_polygon_intersects_circle", poly.array(), *circle.parts)
        else:
            raise AdqlError(
                f"{text}: INTERSECTS of two polygons is not supported; test the vertices with CONTAINS, "
                "or use a CIRCLE for one of them"
            )
    if a.kind == "point" and b.kind == "circle":
        return _call("adql_point_in_circle", *a.parts, *b.parts)
    if a.kind == "point" and b.kind == "polygon":
        return _call("adql_point_in_polygon", *a.parts, b.array())
    if a.kind == "circle" and b.kind == "circle":
        return _call("adql_circle_in_circle", *a.parts, *b.parts)
    if a.kind == "polygon" and b.kind == "circle":
        return _call("adql_polygon_in_circle", a.array(), *b.parts)
    raise AdqlError(
        f"{text}: CONTAINS({a.kind.upper()}, {b.kind.upper()}) is not supported; supported are a POINT in a "
        "CIRCLE, BOX or POLYGON, a CIRCLE in a CIRCLE and a BOX or POLYGON in a CIRCLE"
    )


def _shape_arg(node: exp.Expression, fn: str, text: str) -> Shape:
    shape = _shape(node)
    if shape is None:
        raise AdqlError(
            f"{text}: the arguments of {fn} must be written as POINT, CIRCLE, BOX or POLYGON (no column here "
            "holds a geometry)"
        )
    return shape


def _distance_points(node: exp.Expression) -> tuple[Shape, Shape]:
    text = node.sql()
    args = _args(node)
    if len(args) == 4:  # ADQL 2.1: DISTANCE(ra1, dec1, ra2, dec2)
        return Shape("point", args[:2]), Shape("point", args[2:])
    if len(args) != 2:
        raise AdqlError(f"{text}: DISTANCE takes two POINTs or four numbers (ra1, dec1, ra2, dec2)")
    a, b = _shape_arg(args[0], "DISTANCE", text), _shape_arg(args[1], "DISTANCE", text)
    if a.kind != "point" or b.kind != "point":
        raise AdqlError(f"{text}: DISTANCE is between two POINTs")
    return a, b


def _geometry_value(node: exp.Expression) -> exp.Expression | None:
    """The PostgreSQL for one geometry function call, or None when the node is none."""
    name = _fname(node)
    if name not in _GEOMETRY_CONSTRUCTORS | _GEOMETRY_FUNCTIONS:
        return None
    text = node.sql()
    if name in _GEOMETRY_CONSTRUCTORS:
        shape = _shape(node)
        assert shape is not None
        return _rewrite_shape(shape).array()
    if name == "DISTANCE":
        a, b = (_rewrite_shape(s) for s in _distance_points(node))
        return _call("adql_distance", *a.parts, *b.parts)
    if name in ("CONTAINS", "INTERSECTS"):
        args = _args(node)
        if len(args) != 2:
            raise AdqlError(f"{text}: {name} takes two geometries")
        a, b = (_rewrite_shape(_shape_arg(x, name, text)) for x in args)
        # ADQL's CONTAINS and INTERSECTS are 1 or 0; a comparison with 1 or 0 is unwrapped below.
        return exp.cast(_predicate(name, a, b, text), exp.DataType.build("int"))
    args = _args(node)
    if len(args) != 1:
        raise AdqlError(f"{text}: {name} takes one geometry")
    shape = _rewrite_shape(_shape_arg(args[0], name, text))
    if name in ("COORD1", "COORD2"):
        if shape.kind != "point":
            raise AdqlError(f"{text}: {name} takes a POINT")
        return exp.paren(shape.parts[0 if name == "COORD1" else 1])
    if name == "COORDSYS":
        return exp.Literal.string("ICRS")
    if name == "CENTROID":
        if shape.kind != "circle":
            raise AdqlError(f"{text}: CENTROID is supported for a CIRCLE only")
        return Shape("point", shape.parts[:2]).array()
    if name == "AREA":
        if shape.kind != "circle":
            raise AdqlError(f"{text}: AREA is supported for a CIRCLE only (square degrees)")
        # A spherical cap: 2 pi (1 - cos r) steradians, in square degrees.
        r = exp.paren(shape.parts[2])
        return sqlglot.parse_one("(180 / PI()) ^ 2 * 2 * PI() * (1 - COS(RADIANS(x)))", read="postgres").transform(
            lambda n: r.copy() if isinstance(n, exp.Column) and n.name == "x" else n
        )
    return None


def _rewrite_shape(shape: Shape) -> Shape:
    return Shape(shape.kind, [_rewrite_geometry(p) for p in shape.parts])


def _contains_test(node: exp.Expression) -> tuple[exp.Expression, bool] | None:
    """CONTAINS(...)/INTERSECTS(...) = 1 (or 0, or <> ...) in either order: (call, wanted truth)."""
    if not isinstance(node, (exp.EQ, exp.NEQ)):
        return None
    for call, other in ((node.this, node.expression), (node.expression, node.this)):
        if _fname(call) in ("CONTAINS", "INTERSECTS") and _literal_int(other) in (0, 1):
            truth = (_literal_int(other) == 1) == isinstance(node, exp.EQ)
            return call, truth
    return None


def _rewrite_geometry(node: exp.Expression) -> exp.Expression:
    """Geometry functions -> catalog.adql_* calls and float8[] values, outermost first."""
    test = _contains_test(node)
    if test is not None:
        call, truth = test
        value = _geometry_value(call)
        assert isinstance(value, exp.Cast)
        predicate = value.this  # the boolean under CAST(... AS INT)
        return exp.paren(predicate) if truth else exp.Not(this=exp.paren(predicate))
    value = _geometry_value(node)
    if value is not None:
        return value
    for key, child in list(node.args.items()):
        if isinstance(child, exp.Expression):
            node.set(key, _rewrite_geometry(child))
        elif isinstance(child, list):
            node.set(key, [_rewrite_geometry(c) if isinstance(c, exp.Expression) else c for c in child])
    return node


def _xtype(expression: exp.Expression) -> str | None:
    node = expression.this if isinstance(expression, exp.Alias) else expression
    if _fname(node) == "CENTROID":
        return "point"
    shape = _shape(node) if _fname(node) in _GEOMETRY_CONSTRUCTORS else None
    return shape.kind if shape else None


# -- index-backed pre-selection ------------------------------------------------------------------


def _unit(ra: float, dec: float) -> tuple[float, float, float]:
    r, d = math.radians(ra), math.radians(dec)
    return (math.cos(d) * math.cos(r), math.cos(d) * math.sin(r), math.sin(d))


def _separation(a: tuple[float, float], b: tuple[float, float]) -> float:
    ua, ub = _unit(*a), _unit(*b)
    cross = (ua[1] * ub[2] - ua[2] * ub[1], ua[2] * ub[0] - ua[0] * ub[2], ua[0] * ub[1] - ua[1] * ub[0])
    return math.degrees(math.atan2(math.sqrt(sum(c * c for c in cross)), sum(x * y for x, y in zip(ua, ub))))


def _enclosing_cone(vertices: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """A cone holding a polygon (its vertices' mean direction, out to the farthest vertex).

    A cap of radius below 90 degrees holds every great-circle arc between points inside
    it, so it holds the polygon's edges and the smaller region they bound."""
    xs = [_unit(*v) for v in vertices]
    mean = [sum(c) / len(xs) for c in zip(*xs)]
    norm = math.sqrt(sum(c * c for c in mean))
    if norm < 1e-12:
        return None
    ra0 = math.degrees(math.atan2(mean[1], mean[0])) % 360.0
    dec0 = math.degrees(math.asin(max(-1.0, min(1.0, mean[2] / norm))))
    radius = max(_separation((ra0, dec0), v) for v in vertices)
    return (ra0, dec0, radius) if radius < 89.0 else None


def _cone_of(node: exp.Expression) -> tuple[exp.Column, exp.Column, float, float, float] | None:
    """(ra column, dec column, ra0, dec0, r) when a WHERE conjunct restricts a table's own
    position to a constant cone (or constant polygon), else None."""
    test = _contains_test(node)
    if test is not None:
        call, truth = test
        args = _args(call)
        if not truth or len(args) != 2:
            return None
        try:
            a, b = _shape(args[0]), _shape(args[1])
        except AdqlError:
            return None
        if a is None or b is None or a.kind != "point":
            return None
        if b.kind == "circle":
            values = [_const(p) for p in b.parts]
            if None in values:
                return None
            return _columns_cone(a, *values)
        if b.kind == "polygon":
            values = [_const(p) for p in b.parts]
            if None in values:
                return None
            cone = _enclosing_cone(list(zip(values[0::2], values[1::2])))
            return _columns_cone(a, *cone) if cone else None
        return None
    # DISTANCE(...) < r, <= r, r > DISTANCE(...), r >= DISTANCE(...)
    if isinstance(node, (exp.LT, exp.LTE)):
        call, bound = node.this, node.expression
    elif isinstance(node, (exp.GT, exp.GTE)):
        call, bound = node.expression, node.this
    else:
        return None
    if _fname(call) != "DISTANCE" or _const(bound) is None:
        return None
    try:
        a, b = _distance_points(call)
    except AdqlError:
        return None
    for p, q in ((a, b), (b, a)):
        centre = [_const(x) for x in q.parts]
        if None not in centre and all(isinstance(x, exp.Column) for x in p.parts):
            return _columns_cone(p, centre[0], centre[1], _const(bound))
    return None


def _columns_cone(point: Shape, ra0: float, dec0: float, r: float):
    ra, dec = point.parts
    if not (isinstance(ra, exp.Column) and isinstance(dec, exp.Column)):
        return None
    if not (-90 <= dec0 <= 90) or not (0 < r < 180):
        return None
    return ra, dec, ra0 % 360.0, dec0, r


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    if isinstance(node, exp.Paren) and isinstance(node.this, exp.And):
        return _conjuncts(node.this)
    return [node]


def _add_sky_preselection(select: exp.Select, columns_of) -> None:
    """Put an index-backed pre-selection in front of each constant cone in the WHERE.

    Only top-level conjuncts: there the pre-selection and the exact test are combined by
    AND, so (the pre-selection holding every row the exact test accepts) the result is
    the exact test's, NULL positions included."""
    where = select.args.get("where")
    if where is None:
        return
    for conjunct in _conjuncts(where.this):
        cone = _cone_of(conjunct)
        if cone is None:
            continue
        ra, dec, ra0, dec0, r = cone
        item = _column_item(select, ra, columns_of)
        if item is None or _column_item(select, dec, columns_of) is not item:
            continue
        wide = r * (1 + _MARGIN) + 1e-12
        qualifier = item.alias_or_name
        if isinstance(item, exp.Table) and _table_key(item) == "catalog.spectra" and (ra.name, dec.name) == ("ra", "dec"):
            cone_sql = (
                f'SELECT "spectrum_id" FROM catalog.cone_search_spectra({ra0!r}, {dec0!r}, {min(wide, 180.0) * 3600.0!r})'
            )
            pre = exp.In(
                this=exp.column("spectrum_id", table=qualifier, quoted=True),
                query=exp.Subquery(this=sqlglot.parse_one(cone_sql, read="postgres")),
            )
        else:
            pre = exp.Between(
                this=exp.column(dec.name, table=qualifier, quoted=True),
                low=_number(max(-90.0, dec0 - wide)),
                high=_number(min(90.0, dec0 + wide)),
            )
        conjunct.replace(exp.paren(exp.and_(pre, conjunct.copy())))
