package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"rund/rpcpb"
)

// TestRequestHeadersBounded: a request whose headers add up to more than maxHeaderBytes is refused
// before any handler sees it (RST_STREAM or GOAWAY, not a gRPC answer), although each field is small
// enough on its own; the server goes on serving. Before the bound, grpc-go took 16 MiB of headers per
// stream, and HPACK lets a client send a repeated field for one byte. This client writes HTTP/2 by
// hand: grpc-go's own refuses to send headers over the size the server announces.
func TestRequestHeadersBounded(t *testing.T) {
	ts := startServer(t)
	conn := rawH2(t, ts, "a") // preface and SETTINGS sent
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fields := [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", "/rund.JobController/List"},
		{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"}}
	for i := range 4 { // 4 x 8 KB: twice the bound, each field a quarter of it
		fields = append(fields, [2]string{fmt.Sprintf("x-pad-%d", i), strings.Repeat("x", 8000)})
	}
	var out bytes.Buffer
	block := hpackLiterals(fields)
	for typ, first := byte(1), true; len(block) > 0; typ, first = 9, false { // HEADERS, then CONTINUATION
		n := min(len(block), 16384) // the default SETTINGS_MAX_FRAME_SIZE
		flags := byte(0)
		if first {
			flags |= 0x1 // END_STREAM
		}
		if n == len(block) {
			flags |= 0x4 // END_HEADERS
		}
		writeFrame(&out, typ, flags, 1, block[:n])
		block = block[n:]
	}
	if _, err := conn.Write(out.Bytes()); err != nil {
		t.Fatal(err)
	}
	for {
		var h [9]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			t.Fatalf("read a frame: %v, want RST_STREAM or GOAWAY for the oversized headers", err)
		}
		payload := make([]byte, int(h[0])<<16|int(h[1])<<8|int(h[2]))
		if _, err := io.ReadFull(conn, payload); err != nil {
			t.Fatal(err)
		}
		stream := binary.BigEndian.Uint32(h[5:]) & 0x7fffffff
		switch typ := h[3]; {
		case typ == 3 && stream == 1, typ == 7: // RST_STREAM, GOAWAY: refused
			if _, err := ts.dialAs(t, "a").List(ctx(t), &rpcpb.ListRequest{}); err != nil {
				t.Errorf("after refusing oversized headers, List: %v", err)
			}
			return
		case typ == 1 && stream == 1:
			t.Fatalf("the server answered a request with %d bytes of headers (bound %d)", len(hpackLiterals(fields)), maxHeaderBytes)
		case typ == 4 && h[4]&1 == 0: // the server's SETTINGS: acknowledged
			var ack bytes.Buffer
			writeFrame(&ack, 4, 1, 0, nil)
			conn.Write(ack.Bytes())
		}
	}
}

func writeFrame(w *bytes.Buffer, typ, flags byte, stream uint32, payload []byte) {
	w.Write([]byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags})
	binary.Write(w, binary.BigEndian, stream)
	w.Write(payload)
}

// hpackLiterals encodes fields as HPACK literals without indexing, with new names and no Huffman
// coding (RFC 7541, 6.2.2).
func hpackLiterals(fields [][2]string) []byte {
	var b []byte
	str := func(s string) { // a 7-bit prefix integer (RFC 7541, 5.1), then the octets
		n := len(s)
		if n < 127 {
			b = append(b, byte(n))
		} else {
			b = append(b, 127)
			for n -= 127; n >= 128; n >>= 7 {
				b = append(b, byte(n%128+128))
			}
			b = append(b, byte(n))
		}
		b = append(b, s...)
	}
	for _, f := range fields {
		b = append(b, 0)
		str(f[0])
		str(f[1])
	}
	return b
}
