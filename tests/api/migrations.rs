//! Migrations: up, down, up again on an empty database, and idempotence.

use crate::helpers::{drop_database, empty_database, test_settings, with_database};
use diesel::{Connection, PgConnection, RunQueryDsl};
use iace::store::migrations::{revert_all, run_pending};

fn table_count(url: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(
        "SELECT count(*) AS n FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n
}

/// Every migration folder (so a branch adding one does not have to edit this test).
fn migration_count() -> usize {
    std::fs::read_dir(crate::helpers::project_dir().join("migrations"))
        .unwrap()
        .count()
}

/// Tables once every migration is applied.
const TABLES: i64 = 13;

#[test]
fn migrations_go_up_down_and_up_again() {
    let db = empty_database();
    let url = with_database(test_settings().database.url.expose(), &db);

    let applied = run_pending(&url).expect("up");
    assert_eq!(applied.len(), migration_count(), "{applied:?}");
    assert_eq!(table_count(&url), TABLES);
    assert!(
        run_pending(&url).unwrap().is_empty(),
        "a second run does nothing"
    );

    let reverted = revert_all(&url).expect("down");
    assert_eq!(reverted.len(), migration_count());
    assert_eq!(table_count(&url), 0);

    assert_eq!(
        run_pending(&url).expect("up again").len(),
        migration_count()
    );
    assert_eq!(table_count(&url), TABLES);
    drop_database(&db);
}

#[test]
fn tenant_tables_carry_an_indexed_organization_foreign_key() {
    let db = empty_database();
    let url = with_database(test_settings().database.url.expose(), &db);
    run_pending(&url).unwrap();
    #[derive(diesel::QueryableByName, Debug)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        table_name: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        has_fk: bool,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        has_index: bool,
    }
    let mut conn = PgConnection::establish(&url).unwrap();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT c.table_name::text AS table_name,
           EXISTS (SELECT 1 FROM pg_constraint k
                   WHERE k.conrelid = c.table_name::regclass AND k.contype = 'f'
                     AND k.confrelid = 'organizations'::regclass) AS has_fk,
           EXISTS (SELECT 1 FROM pg_index i
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                   WHERE i.indrelid = c.table_name::regclass
                     AND a.attname = 'organization_id') AS has_index
         FROM information_schema.columns c
         WHERE c.table_schema = 'public' AND c.column_name = 'organization_id'",
    )
    .load(&mut conn)
    .unwrap();
    assert!(rows.len() >= 10, "{rows:?}");
    for row in rows {
        assert!(row.has_fk && row.has_index, "{}: {row:?}", row.table_name);
    }
    drop_database(&db);
}
