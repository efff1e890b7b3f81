//! Schema migrations, embedded in the binary. Each backend has its own SQL
//! (`migrations/{sqlite,postgres}/`); both record applied versions in
//! `vitrine_migrations`, so applying them is idempotent.

/// One migration: a version (strictly increasing), a name and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "tenant_generation",
        sql: include_str!("../../../migrations/sqlite/0002_tenant_generation.sql"),
    },
    Migration {
        version: 3,
        name: "plugins",
        sql: include_str!("../../../migrations/sqlite/0003_plugins.sql"),
    },
    Migration {
        version: 4,
        name: "product_images",
        sql: include_str!("../../../migrations/sqlite/0004_product_images.sql"),
    },
    Migration {
        version: 5,
        name: "global_jobs",
        sql: include_str!("../../../migrations/sqlite/0005_global_jobs.sql"),
    },
    Migration {
        version: 6,
        name: "tenant_limits",
        sql: include_str!("../../../migrations/sqlite/0006_tenant_limits.sql"),
    },
    Migration {
        version: 7,
        name: "change_feed",
        sql: include_str!("../../../migrations/sqlite/0007_change_feed.sql"),
    },
    Migration {
        version: 8,
        name: "change_compaction",
        sql: include_str!("../../../migrations/sqlite/0008_change_compaction.sql"),
    },
];

pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "tenant_generation",
        sql: include_str!("../../../migrations/postgres/0002_tenant_generation.sql"),
    },
    Migration {
        version: 3,
        name: "plugins",
        sql: include_str!("../../../migrations/postgres/0003_plugins.sql"),
    },
    Migration {
        version: 4,
        name: "product_images",
        sql: include_str!("../../../migrations/postgres/0004_product_images.sql"),
    },
    Migration {
        version: 5,
        name: "global_jobs",
        sql: include_str!("../../../migrations/postgres/0005_global_jobs.sql"),
    },
    Migration {
        version: 6,
        name: "tenant_limits",
        sql: include_str!("../../../migrations/postgres/0006_tenant_limits.sql"),
    },
    Migration {
        version: 7,
        name: "change_feed",
        sql: include_str!("../../../migrations/postgres/0007_change_feed.sql"),
    },
    Migration {
        version: 8,
        name: "change_compaction",
        sql: include_str!("../../../migrations/postgres/0008_change_compaction.sql"),
    },
];

/// What `vitrine migrate` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i64>,
    pub already_applied: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_and_backends_match() {
        for set in [SQLITE, POSTGRES] {
            assert!(set.windows(2).all(|w| w[0].version < w[1].version));
        }
        let names = |s: &[Migration]| s.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }
}
