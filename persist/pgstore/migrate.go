package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/tp0/loteria/internal/logging"
)

// The schema is created and upgraded by the servers themselves from these
// files: migrations/NNNN_name.sql, applied in order, each in its own
// transaction, each recorded in schema_migrations.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrateLock is the advisory lock key the servers hold while they migrate
// the schema and pin the lottery, so two servers starting at once on an
// empty database do not both create it ("loteria" in ASCII).
const migrateLock int64 = 0x6c6f746572696100

// ErrSchemaNewer means the database was migrated by a newer server.
var ErrSchemaNewer = errors.New("database schema is newer than this program")

// migration is one embedded schema step.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("embedded migration %q is not named NNNN_name.sql", e.Name())
		}
		body, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read embedded migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("embedded migrations skip from version %d to %d", i, m.version)
		}
	}
	return out, nil
}

// SchemaVersion is the schema version this program creates and reads.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// withMigrateLock runs fn on one connection holding the migration lock.
func withMigrateLock(ctx context.Context, pool *pgxpool.Pool, fn func(conn *pgx.Conn) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLock); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	ferr := fn(conn.Conn())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", migrateLock); err != nil {
		// The lock goes with the session: drop the connection rather than
		// hand it back to the pool still holding it.
		_ = conn.Conn().Close(ctx)
		if ferr == nil {
			ferr = fmt.Errorf("release the migration lock: %w", err)
		}
	}
	return ferr
}

// migrate brings the schema to this program's version; the caller holds
// the migration lock. It refuses a schema newer than it knows.
func migrate(ctx context.Context, conn *pgx.Conn, log *zap.Logger) (int, error) {
	ms, err := migrations()
	if err != nil {
		return 0, err
	}
	// Created once; checked first, so that a server whose role may only read
	// and write the tables (SCALING.md) starts on a database set up before.
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("look for schema_migrations: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return 0, fmt.Errorf("create schema_migrations: %w", err)
		}
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if current > len(ms) {
		return current, fmt.Errorf("%w: the database is at schema version %d, this program knows up to %d; run a newer server",
			ErrSchemaNewer, current, len(ms))
	}
	for _, m := range ms[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		})
		if err != nil {
			log.Error("pg_migrate", logging.Fail, zap.Int("version", m.version), zap.String("name", m.name), zap.Error(err))
			return current, fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		current = m.version
		log.Info("pg_migrate", logging.Success, zap.Int("version", m.version), zap.String("name", m.name))
	}
	return current, nil
}

// checkSchema reports the database's schema version without changing it,
// for tools that only read: it must exist and not be newer than this
// program's.
func checkSchema(ctx context.Context, q querier) (int, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if !exists {
		return 0, errors.New("the database holds no lottery (no schema_migrations table): point --store at the servers' database")
	}
	var v int
	if err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if v > SchemaVersion() {
		return v, fmt.Errorf("%w: the database is at schema version %d, this program knows up to %d", ErrSchemaNewer, v, SchemaVersion())
	}
	if v < SchemaVersion() {
		return v, fmt.Errorf("the database is at schema version %d, this program reads %d: start a server on it once to migrate it", v, SchemaVersion())
	}
	return v, nil
}

// querier is what both a connection and a transaction offer.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}
