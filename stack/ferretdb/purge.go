package main

// Purges at the speed of the engine (PostgreSQL handler only).
//
// FerretDB 1.24 deletes by reading every matching document, decoding it in Go (~0.1 ms each) to
// filter it again, and then deleting the matched ids, each bound as a parameter (at most 65,535 per
// statement). Deleting one organization's 100,000 ledger entries that way costs ~10 s of CPU and
// several statements; PostgreSQL itself deletes them in well under a second.
//
// So a delete whose comment is `orgplatform:purge:{"field": f, "values": [...]}` -- sent only by
// common.mongo.purge_delete, together with the equivalent filter {f: {$in: values}} for any other
// server -- is run here as one SQL statement:
//
//	DELETE FROM <schema>.<table> WHERE _jsonb -> 'f' = ANY (<values as jsonb strings>)
//
// answered from FerretDB's own btree index on (_jsonb -> 'f'), and answered to the client as
// FerretDB would ({n, ok}). Values are strings (ids the platform generates), for which jsonb
// equality is exactly the filter's meaning. Like any delete_many it is not atomic with other
// writes, and it does not take the database's write lock: a purge removes a deleted
// organization's documents, whose outcome depends on no other write. If anything is off (an
// unknown field shape, a table FerretDB is dropping) the command goes to FerretDB as usual.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

const purgePrefix = "orgplatform:purge:"

var plainField = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

type purgeRequest struct {
	Field  string   `json:"field"`
	Values []string `json:"values"`
}

func parsePurge(comment string) (*purgeRequest, bool) {
	if !strings.HasPrefix(comment, purgePrefix) {
		return nil, false
	}
	var req purgeRequest
	if err := json.Unmarshal([]byte(comment[len(purgePrefix):]), &req); err != nil {
		return nil, false
	}
	if !plainField.MatchString(req.Field) || len(req.Values) == 0 {
		return nil, false
	}
	return &req, true
}

// purge deletes the matching documents of db.collection in PostgreSQL; returns how many.
func (m *mirror) purge(db, collection string, req *purgeRequest) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, m.url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var table string
	err = conn.QueryRow(ctx, "SELECT _jsonb ->> 'table' FROM "+pgx.Identifier{db, "_ferretdb_database_metadata"}.Sanitize()+
		" WHERE _jsonb -> '_id' = to_jsonb($1::text)", collection).Scan(&table)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil // no such collection: nothing to delete
	}
	if err != nil {
		return 0, err
	}
	tag, err := conn.Exec(ctx, "DELETE FROM "+pgx.Identifier{db, table}.Sanitize()+
		" WHERE _jsonb -> '"+req.Field+"' = ANY (ARRAY(SELECT to_jsonb(v) FROM unnest($1::text[]) AS v))",
		req.Values)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// deleteReply is FerretDB's answer to a delete: an OP_MSG with {n: <count>, ok: 1.0}.
func deleteReply(responseTo int32, n int64) *message {
	doc := []byte{0, 0, 0, 0}
	doc = append(doc, 0x10, 'n', 0)
	doc = binary.LittleEndian.AppendUint32(doc, uint32(int32(n)))
	doc = append(doc, 0x01, 'o', 'k', 0)
	doc = binary.LittleEndian.AppendUint64(doc, math.Float64bits(1))
	doc = append(doc, 0)
	binary.LittleEndian.PutUint32(doc[0:4], uint32(len(doc)))
	body := append([]byte{0, 0, 0, 0, 0}, doc...) // flag bits, then one kind-0 section
	m := &message{body: body}
	binary.LittleEndian.PutUint32(m.header[0:4], uint32(headerLength+len(body)))
	binary.LittleEndian.PutUint32(m.header[8:12], uint32(responseTo))
	binary.LittleEndian.PutUint32(m.header[12:16], opMsg)
	return m
}
