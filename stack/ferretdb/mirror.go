package main

// Index mirrors for the PostgreSQL handler.
//
// FerretDB 1.24 pushes an equality filter down to PostgreSQL as `_jsonb -> 'field' @> '"value"'`
// (containment), but the indexes it creates for createIndexes are btree indexes on
// `(_jsonb -> 'field')`, which no containment test can use: every pushed-down query is a
// sequential scan of the whole table, so one organization's page gets slower as other
// organizations' data grows (measured: 16.8 ms at 10k documents, 118 ms at 100k, same page).
//
// So for every field FerretDB indexes (and for `_id`, which every collection has), this program
// keeps a GIN index `USING gin ((_jsonb -> 'field') jsonb_path_ops)` beside FerretDB's own: the
// very expression of the pushed-down filter, so PostgreSQL answers it from the index. FerretDB
// does not know these indexes (they are not in its metadata): dropping a collection drops them
// with the table, and listIndexes shows only the declared ones. The queries are planned per call
// (plan_cache_mode=force_custom_plan, set on FerretDB's connections): the field name is a bind
// parameter, and only a plan made with its value can match an expression index.
//
// fastupdate is off: with PostgreSQL's pending list every query scans all entries not yet merged
// into the index (measured: 4.2 ms instead of 0.03 ms for one page after a bulk insert, until the
// next vacuum), which is the very growth these indexes are here to remove; inserts pay a little
// more instead.
//
// The mirror is reconciled at start, after every createIndexes/create the front forwards, and
// every few seconds (a collection created by its first insert has no createIndexes).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// fieldInIndex finds the top-level fields of a FerretDB btree index definition; a dotted path
// (`_jsonb -> 'a' -> 'b'`) is not mirrored (its filter is pushed down as `#>`, another expression).
var fieldInIndex = regexp.MustCompile(`\(_jsonb -> '((?:[^']|'')+)'::text\)\)`)

const mirrorQuery = `
SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_%'
  AND c.relname NOT LIKE '\_ferretdb\_%'
  AND pg_get_indexdef(i.indexrelid) LIKE '%USING btree%_jsonb -> %'`

// withCustomPlans adds plan_cache_mode=force_custom_plan to a PostgreSQL URL (pgx passes unknown
// parameters to the server as run-time settings of each connection).
func withCustomPlans(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	if q.Get("plan_cache_mode") == "" {
		q.Set("plan_cache_mode", "force_custom_plan")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

type mirror struct {
	url     string
	trigger chan struct{}
}

func newMirror(postgresURL string) *mirror {
	// our own connection carries none of FerretDB's pool settings
	u, err := url.Parse(postgresURL)
	if err == nil {
		q := u.Query()
		q.Del("pool_max_conns")
		u.RawQuery = q.Encode()
		postgresURL = u.String()
	}
	return &mirror{url: postgresURL, trigger: make(chan struct{}, 1)}
}

// poke asks for a reconcile soon (never blocks).
func (m *mirror) poke() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

func (m *mirror) run(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		if err := m.reconcile(ctx); err != nil && ctx.Err() == nil {
			log.Printf("index mirror: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.trigger:
			// let a burst of createIndexes (a service starting) finish first
			time.Sleep(200 * time.Millisecond)
		case <-tick.C:
		}
	}
}

func mirrorName(schema, table, field string) string {
	// "v2": the first mirrors were made with fastupdate on; a new name replaces them
	sum := sha256.Sum256([]byte("v2\x00" + schema + "\x00" + table + "\x00" + field))
	return "gin_" + hex.EncodeToString(sum[:12])
}

func (m *mirror) reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, mirrorQuery)
	if err != nil {
		return err
	}
	type target struct{ schema, table, field string }
	var wanted []target
	for rows.Next() {
		var schema, table, def string
		if err := rows.Scan(&schema, &table, &def); err != nil {
			rows.Close()
			return err
		}
		for _, match := range fieldInIndex.FindAllStringSubmatch(def, -1) {
			wanted = append(wanted, target{schema, table, match[1]})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// what exists (a dropped and re-created database has the same table names, none of the indexes)
	existing := map[string]bool{}
	names, err := conn.Query(ctx, `SELECT schemaname, indexname FROM pg_indexes WHERE indexname LIKE 'gin\_%'`)
	if err != nil {
		return err
	}
	for names.Next() {
		var schema, name string
		if err := names.Scan(&schema, &name); err != nil {
			names.Close()
			return err
		}
		existing[schema+"."+name] = true
	}
	names.Close()
	keep := map[string]bool{}
	for _, t := range wanted {
		name := mirrorName(t.schema, t.table, t.field)
		keep[t.schema+"."+name] = true
		if existing[t.schema+"."+name] {
			continue
		}
		existing[t.schema+"."+name] = true
		// t.field is the body of a string literal as PostgreSQL printed it (quotes doubled)
		sql := "CREATE INDEX IF NOT EXISTS " + pgx.Identifier{name}.Sanitize() +
			" ON " + pgx.Identifier{t.schema, t.table}.Sanitize() +
			" USING gin ((_jsonb -> '" + t.field + "') jsonb_path_ops) WITH (fastupdate = off)"
		if _, err := conn.Exec(ctx, sql); err != nil {
			// the table may have been dropped meanwhile; the next reconcile sees the truth
			log.Printf("index mirror %s.%s(%s): %v", t.schema, t.table, t.field, err)
		}
	}
	// a mirror whose FerretDB index is gone (dropIndexes), or of an older kind, goes too
	for qualified := range existing {
		if keep[qualified] {
			continue
		}
		dot := strings.IndexByte(qualified, '.')
		sql := "DROP INDEX IF EXISTS " + pgx.Identifier{qualified[:dot], qualified[dot+1:]}.Sanitize()
		if _, err := conn.Exec(ctx, sql); err != nil {
			log.Printf("index mirror: dropping %s: %v", qualified, err)
		}
	}
	return nil
}
