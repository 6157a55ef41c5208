package bench

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tp0/loteria/persist/pgstore"
)

// connectAdmin connects to the database at admin, the one --store names.
func connectAdmin(ctx context.Context, admin string) (*pgx.Conn, error) {
	cfg, err := pgstore.ParseURL(admin)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", pgstore.Target(cfg), err)
	}
	return conn, nil
}

// reportedSettings are the PostgreSQL settings a reader of the numbers
// needs: whether a commit waits for the disk, and how much memory it has.
var reportedSettings = []string{"fsync", "synchronous_commit", "full_page_writes", "wal_sync_method", "shared_buffers"}

// describePostgres fills the server's version and settings in cfg.
func describePostgres(ctx context.Context, admin string, cfg *ScaleOutConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := connectAdmin(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&cfg.Postgres); err != nil {
		return fmt.Errorf("PostgreSQL version: %w", err)
	}
	cfg.Settings = map[string]string{}
	for _, name := range reportedSettings {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return fmt.Errorf("PostgreSQL setting %s: %w", name, err)
		}
		cfg.Settings[name] = v
	}
	return nil
}

// createDatabase creates database name on the server of admin and returns
// its URL: admin's, naming the new database.
func createDatabase(ctx context.Context, admin, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := connectAdmin(ctx, admin)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s (the --store user needs CREATEDB): %w", name, err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", fmt.Errorf("--store: %w", err)
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String(), nil
}

// dropDatabase drops database name, best effort: the front ends have
// stopped by then, FORCE covers the ones a failed run killed.
func dropDatabase(admin, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := connectAdmin(ctx, admin)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident) // before PostgreSQL 13
	}
}
