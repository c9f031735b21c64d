// Command ferretdb-local runs FerretDB (MongoDB wire protocol) on PostgreSQL (the default, a cluster
// the stack starts) or SQLite (-handler sqlite: no server needed) for local development and tests.
//
// It exists because no MongoDB server package is available on the development machines; any real
// MongoDB given by MONGO_URL is used instead when set.
//
// FerretDB 1.24's SQLite handler does not make a conditional update atomic: fifty concurrent
// findAndModify({n: {$lt: 17}}, {$inc: {n: 1}}) all "succeed" and n ends far below 17 (lost
// updates). MongoDB guarantees single-document atomicity, and the platform's seat counters,
// credit balances and outbox rely on it. So FerretDB listens on a private Unix socket and this
// program fronts it with a small wire-protocol proxy that lets one write command per database at a
// time reach FerretDB (reads still run concurrently). SQLite serialises writers per database file
// anyway, so little is lost; the PostgreSQL handler has the same gap (measured: 8 writers guarding
// one document lost ~80% of their updates without the front), so the front stays for both.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const (
	opMsg        = 2013
	moreToCome   = 1 << 1
	maxMessage   = 48_000_000
	headerLength = 16
)

// writeCommands change data; only one of them is in flight at a time.
var writeCommands = map[string]bool{
	"insert": true, "update": true, "delete": true, "findAndModify": true, "findandmodify": true,
	"createIndexes": true, "dropIndexes": true, "drop": true, "dropDatabase": true, "create": true,
	"renameCollection": true,
}

// indexMirror keeps PostgreSQL's GIN mirrors of FerretDB's indexes (mirror.go); nil on SQLite.
var indexMirror *mirror

// One writer at a time per database (FerretDB keeps one SQLite file per database).
var (
	locksMu sync.Mutex
	locks   = map[string]*writeLock{}
)

// lockPatience is how long a write waits for its database's lock before it takes it over. A write
// holds the lock only until FerretDB answers it (milliseconds; a purge's deletes do not take it),
// so a lock held this long was lost -- its answer will never come -- and waiting longer would
// wedge every later write of that database. The take-over is logged with the command that held it.
const lockPatience = 30 * time.Second

// writeLock is one database's lock: a one-slot channel, so that a waiter can give up.
type writeLock struct {
	slot    chan struct{}
	holder  string
	since   time.Time
	release func()
}

func acquire(db, command string) (release func()) {
	deadline := time.Now().Add(lockPatience)
	for {
		locksMu.Lock()
		lock, ok := locks[db]
		if !ok {
			lock = &writeLock{slot: make(chan struct{}, 1)}
			locks[db] = lock
		}
		locksMu.Unlock()
		select {
		case lock.slot <- struct{}{}:
			var once sync.Once
			locksMu.Lock()
			lock.holder, lock.since = command, time.Now()
			locksMu.Unlock()
			return func() { once.Do(func() { <-lock.slot }) }
		case <-time.After(time.Until(deadline)):
			locksMu.Lock()
			if locks[db] == lock { // nobody replaced it meanwhile: replace it
				log.Printf("write lock of database %q held by %q for %s without an answer: taking it over",
					db, lock.holder, time.Since(lock.since).Round(time.Second))
				locks[db] = &writeLock{slot: make(chan struct{}, 1)}
			}
			locksMu.Unlock()
			deadline = time.Now().Add(lockPatience)
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data", "var/ferretdb", "directory for the SQLite files and the private socket")
	handler := flag.String("handler", "postgresql", "storage: postgresql or sqlite")
	postgresURL := flag.String("postgresql-url", "", "PostgreSQL URL for -handler postgresql (set pool_max_conns)")
	debug := flag.Bool("debug", false, "log every request (very verbose)")
	flag.Parse()

	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	// Bind the public port first: a second copy started by mistake must fail before touching anything.
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	socket := filepath.Join(dir, fmt.Sprintf("ferretdb-%d.sock", os.Getpid()))
	_ = os.Remove(socket)
	defer os.Remove(socket)

	level := slog.LevelWarn
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	config := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{Unix: socket},
		Logger:   logger,
		Handler:  *handler,
	}
	switch *handler {
	case "sqlite":
		config.SQLiteURL = "file:" + dir + "/"
	case "postgresql":
		if *postgresURL == "" {
			log.Fatal("-postgresql-url is required with -handler postgresql")
		}
		config.PostgreSQLURL = withCustomPlans(*postgresURL)
		indexMirror = newMirror(*postgresURL)
	default:
		log.Fatalf("unknown -handler %q (postgresql or sqlite)", *handler)
	}
	f, err := ferretdb.New(config)
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go f.Run(ctx)
	if indexMirror != nil {
		go indexMirror.run(ctx)
	}

	go func() {
		<-ctx.Done()
		listener.Close()
	}()
	log.Printf("ferretdb listening on %s (writes serialised), handler %s", *listen, *handler)
	for {
		client, err := listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Printf("accept: %v", err)
			continue
		}
		go serve(client, socket)
	}
}

type message struct {
	header [headerLength]byte
	body   []byte
}

func (m *message) requestID() int32  { return int32(binary.LittleEndian.Uint32(m.header[4:8])) }
func (m *message) responseTo() int32 { return int32(binary.LittleEndian.Uint32(m.header[8:12])) }
func (m *message) opCode() int32     { return int32(binary.LittleEndian.Uint32(m.header[12:16])) }

func readMessage(r io.Reader) (*message, error) {
	m := &message{}
	if _, err := io.ReadFull(r, m.header[:]); err != nil {
		return nil, err
	}
	length := int(binary.LittleEndian.Uint32(m.header[0:4]))
	if length < headerLength || length > maxMessage {
		return nil, errors.New("bad message length")
	}
	m.body = make([]byte, length-headerLength)
	if _, err := io.ReadFull(r, m.body); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *message) writeTo(w io.Writer) error {
	if _, err := w.Write(m.header[:]); err != nil {
		return err
	}
	_, err := w.Write(m.body)
	return err
}

// command returns the command name of an OP_MSG (the first key of its body document), the
// database it addresses ("$db"), the first key's string value (a delete's collection), its
// top-level "comment" string and the message flags.
func (m *message) command() (name, db, target, comment string, flags uint32) {
	if m.opCode() != opMsg || len(m.body) < 4+1+4+1+1 {
		return "", "", "", "", 0
	}
	flags = binary.LittleEndian.Uint32(m.body[0:4])
	offset := 4
	for offset < len(m.body) {
		kind := m.body[offset]
		offset++
		if kind == 1 { // document sequence: int32 size, then skip it
			if offset+4 > len(m.body) {
				return "", "", "", "", flags
			}
			offset += int(binary.LittleEndian.Uint32(m.body[offset : offset+4]))
			continue
		}
		name, db, target, comment = commandAndDatabase(m.body[offset:])
		return name, db, target, comment, flags
	}
	return "", "", "", "", flags
}

// commandAndDatabase walks the top level of a BSON document: its first key and that key's string
// value, its "$db" string and its "comment" string.
func commandAndDatabase(doc []byte) (name, db, target, comment string) {
	if len(doc) < 5 {
		return "", "", "", ""
	}
	end := int(binary.LittleEndian.Uint32(doc[0:4]))
	if end > len(doc) {
		return "", "", "", ""
	}
	offset := 4
	for offset < end-1 {
		kind := doc[offset]
		offset++
		keyEnd := offset
		for keyEnd < end && doc[keyEnd] != 0 {
			keyEnd++
		}
		key := string(doc[offset:keyEnd])
		offset = keyEnd + 1
		first := name == ""
		if first {
			name = key
		}
		size := valueSize(kind, doc[offset:end])
		if size < 0 || offset+size > end {
			return name, db, target, comment
		}
		if first && kind == 0x02 && size > 5 {
			target = string(doc[offset+4 : offset+size-1])
		}
		if key == "$db" && kind == 0x02 && size > 5 {
			db = string(doc[offset+4 : offset+size-1])
		}
		if key == "comment" && kind == 0x02 && size > 5 {
			comment = string(doc[offset+4 : offset+size-1])
		}
		offset += size
	}
	return name, db, target, comment
}

// valueSize is the encoded size of a BSON value of type kind, or -1 if unknown.
func valueSize(kind byte, value []byte) int {
	int32At := func() int {
		if len(value) < 4 {
			return -1
		}
		return int(binary.LittleEndian.Uint32(value[0:4]))
	}
	switch kind {
	case 0x01, 0x09, 0x11, 0x12: // double, datetime, timestamp, int64
		return 8
	case 0x02, 0x0D, 0x0E: // string, javascript, symbol
		if n := int32At(); n >= 0 {
			return 4 + n
		}
	case 0x03, 0x04: // document, array
		return int32At()
	case 0x05: // binary
		if n := int32At(); n >= 0 {
			return 4 + 1 + n
		}
	case 0x06, 0x0A, 0x7F, 0xFF: // undefined, null, max key, min key
		return 0
	case 0x07: // object id
		return 12
	case 0x08: // bool
		return 1
	case 0x10: // int32
		return 4
	case 0x13: // decimal128
		return 16
	}
	return -1
}

// serve proxies one client connection; a write command holds writeLock until its reply arrives.
func serve(client net.Conn, socket string) {
	defer client.Close()
	server, err := net.DialTimeout("unix", socket, 10*time.Second)
	if err != nil {
		log.Printf("dial ferretdb: %v", err)
		return
	}
	defer server.Close()

	var clientMu sync.Mutex // one answer at a time to the client (FerretDB's, or a purge's)
	var mu sync.Mutex       // guards awaiting and held
	awaiting := int32(0)
	var held func() // releases the database lock this connection holds
	release := func() {
		mu.Lock()
		if held != nil {
			held()
			held = nil
			awaiting = 0
		}
		mu.Unlock()
	}
	defer release()

	done := make(chan struct{})
	go func() { // server -> client
		defer close(done)
		defer client.Close()
		for {
			reply, err := readMessage(server)
			if err != nil {
				release()
				return
			}
			// Release before the client can see the answer: a client that gets it sends its next
			// command at once, and if that one is a write to another database its lock would
			// replace this one in `held` before it was released -- a lock lost for good (every
			// later write to that database hung; seen after a client dropped several databases).
			mu.Lock()
			answered := held != nil && reply.responseTo() == awaiting
			mu.Unlock()
			if answered {
				release()
			}
			clientMu.Lock()
			err = reply.writeTo(client)
			clientMu.Unlock()
			if err != nil {
				release()
				return
			}
		}
	}()

	for { // client -> server
		request, err := readMessage(client)
		if err != nil {
			break
		}
		name, db, target, comment, flags := request.command()
		if name == "delete" && indexMirror != nil && flags&moreToCome == 0 {
			if purge, ok := parsePurge(comment); ok {
				n, err := indexMirror.purge(db, target, purge)
				if err == nil {
					clientMu.Lock()
					err = deleteReply(request.requestID(), n).writeTo(client)
					clientMu.Unlock()
					if err != nil {
						break
					}
					continue
				}
				log.Printf("purge of %s.%s in SQL failed, FerretDB deletes: %v", db, target, err)
			}
		}
		if indexMirror != nil && (name == "createIndexes" || name == "create") {
			indexMirror.poke()
		}
		if writeCommands[name] && flags&moreToCome == 0 {
			unlock := acquire(db, name)
			mu.Lock()
			held = unlock
			awaiting = request.requestID()
			mu.Unlock()
		}
		if err := request.writeTo(server); err != nil {
			break
		}
	}
	server.Close()
	<-done
}
