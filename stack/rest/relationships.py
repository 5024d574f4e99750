"""Which relationship an embed names, as PostgREST 12 detects them: foreign keys in both directions
(one-to-one when the referencing columns are unique), many-to-many through a junction table, foreign
keys seen through views, computed relationships (functions of a row), and embedding by a foreign key's
constraint or column name. Hints (``rel!hint``) narrow the candidates; more than one left is PGRST201.

A ``Link`` only says how the embedded rows join their parent; ``sqlgen`` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.rest.errors import RestError
from stack.rest.grammar import Embed
from stack.rest.schema_cache import ForeignKey, Function, Relation, SchemaCache

__all__ = ["Link", "resolve"]


@dataclass(frozen=True)
class Link:
    target: Relation
    to_one: bool
    fk: ForeignKey | None = None  # a foreign key between parent and target
    forward: bool = True  # the parent holds the key (many-to-one)
    junction: Relation | None = None  # many-to-many: the table in between
    jfk_parent: ForeignKey | None = None
    jfk_target: ForeignKey | None = None
    function: Function | None = None  # a computed relationship: function(parent row) -> target rows

    @property
    def cardinality(self) -> str:
        if self.junction is not None:
            return "many-to-many"
        if self.function is not None:
            return "many-to-one" if self.to_one else "one-to-many"
        if self.forward:
            return "many-to-one"
        return "one-to-one" if self.to_one else "one-to-many"

    def describe(self, parent: Relation) -> dict[str, str]:
        """One entry of PGRST201's ``details``, in PostgREST's words."""
        t = self.target
        if self.junction is not None and self.jfk_parent and self.jfk_target:
            j = self.junction
            rel = (f"{j.name} using {self.jfk_parent.name}({', '.join(self.jfk_parent.columns)}) and "
                   f"{self.jfk_target.name}({', '.join(self.jfk_target.columns)})")
        elif self.fk is not None:
            fk = self.fk
            if self.forward:
                rel = f"{fk.name} using {parent.name}({', '.join(fk.columns)}) and {t.name}({', '.join(fk.ref_columns)})"
            else:
                rel = f"{fk.name} using {parent.name}({', '.join(fk.ref_columns)}) and {t.name}({', '.join(fk.columns)})"
        else:
            rel = f"{self.function.name if self.function else '?'}"
        return {"cardinality": self.cardinality, "embedding": f"{parent.name} with {t.name}", "relationship": rel}

    def hint_name(self) -> str:
        if self.junction is not None:
            return self.junction.name
        if self.fk is not None:
            return self.fk.name
        return self.function.name if self.function else ""


def _fk_links(cache: SchemaCache, parent: Relation, target: Relation) -> list[Link]:
    out = []
    for fk, forward in cache.relationships(parent, target.name):
        if forward:
            if (fk.ref_schema, fk.ref_table) != (target.schema, target.name):
                continue
            out.append(Link(target, True, fk, True))
        else:
            if (fk.schema, fk.table) != (target.schema, target.name):
                continue
            out.append(Link(target, target.is_unique(fk.columns), fk, False))
    for j, a, b in cache.junctions(parent, target.name):
        if (b.ref_schema, b.ref_table) == (target.schema, target.name) and j.name not in (parent.name, target.name):
            out.append(Link(target, False, None, False, j, a, b))
    return out


def _matches_hint(link: Link, hint: str) -> bool:
    if link.junction is not None:
        return hint == link.junction.name or (link.jfk_target is not None and hint in (link.jfk_target.name,))
    if link.fk is not None:
        fk = link.fk
        if (fk.schema, fk.table) == (fk.ref_schema, fk.ref_table):
            # a self-referencing key, as PostgREST 12 answers it: a column hint names the rows pointing here
            # (one-to-many); the constraint's name matches neither direction (PGRST200)
            return not link.forward and hint in fk.columns
        return hint == fk.name or hint in fk.columns or hint in fk.ref_columns or hint == fk.table
    return link.function is not None and hint == link.function.name


def resolve(cache: SchemaCache, schema: str, parent: Relation, e: Embed) -> Link:
    """The one relationship ``e`` names from ``parent``, or PGRST200 / PGRST201."""
    links: list[Link] = []
    fn = cache.computed.get((parent.schema, parent.name), {}).get(e.relation)
    if fn is not None and fn.return_rel is not None and fn.return_rel in cache.relations:
        links.append(Link(cache.relations[fn.return_rel], fn.to_one, function=fn))
    target = cache.relation(schema, e.relation)
    if target is not None and not links:
        links = _fk_links(cache, parent, target)
        if e.hint:
            links = [link for link in links if _matches_hint(link, e.hint)]
        if len(links) > 1 and parent.name == target.name and not e.hint:
            # a self-referencing key: the plain name means the rows that point at this one (PostgREST 12)
            links = [link for link in links if not link.forward] or links
    elif not links:
        # "vendor:vendor_id(*)" names the target by the parent's key column; "best_friends_first_user_fkey(*)"
        # by the constraint
        for fk in cache.fks:
            mine = (fk.schema, fk.table) == (parent.schema, parent.name)
            theirs = (fk.ref_schema, fk.ref_table) == (parent.schema, parent.name)
            if mine and (fk.columns == (e.relation,) or fk.name == e.relation):
                ref = cache.relation(fk.ref_schema, fk.ref_table)
                if ref is not None:
                    links.append(Link(ref, True, fk, True))
            elif theirs and fk.name == e.relation:
                child = cache.relation(fk.schema, fk.table)
                if child is not None:
                    links.append(Link(child, child.is_unique(fk.columns), fk, False))
        if len(links) > 1:  # a key column names the key's own table before the views that show it
            links = [link for link in links if link.target.kind not in ("v", "m")] or links
    if not links:
        raise RestError(400, "PGRST200",
                        f"Could not find a relationship between '{parent.name}' and '{e.relation}' in the schema cache",
                        f"Searched for a foreign key relationship between '{parent.name}' and '{e.relation}'"
                        + (f" using the hint '{e.hint}'" if e.hint else "")
                        + f" in the schema '{schema}', but no matches were found.")
    if len(links) > 1:
        err = RestError(300, "PGRST201", f"Could not embed because more than one relationship was found for "
                                         f"'{parent.name}' and '{e.relation}'", None,
                        f"Try changing '{e.relation}' to one of the following: "
                        + ", ".join(f"'{e.relation}!{link.hint_name()}'" for link in links)
                        + ". Find the desired relationship in the 'details' key.")
        err.details_json = [link.describe(parent) for link in links]
        raise err
    return links[0]
