"""May this actor view this table? Asked the way each Datasette version asks it.

Datasette 0.65 checks a list of permissions, most specific first (view-table, then
view-database, then view-instance); the 1.0 alphas check one action on a resource, and their
rules for the table already take the database's and the instance's into account.
"""


async def may_view_table(datasette, actor, database: str, table: str) -> bool:
    if hasattr(datasette, "allowed"):  # Datasette 1.0
        from datasette.resources import TableResource

        return await datasette.allowed(action="view-table", resource=TableResource(database=database, table=table),
                                       actor=actor)
    visible, _ = await datasette.check_visibility(
        actor, permissions=[("view-table", (database, table)), ("view-database", database), "view-instance"]
    )
    return visible
