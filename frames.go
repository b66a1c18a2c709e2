//go:build !rundinit

package main

// frames.go reads the HTTP/2 frame headers (RFC 9113 4.1) that a client sends on an established
// connection, without interpreting more of them, and closes the connection of a client that sends far
// more small frames than any client needs:
//
//   - small DATA frames (under smallData bytes, not ending their stream): grpc-go holds each received
//     frame apart until its message is read whole, some 50 bytes of its memory per frame, so a request
//     body sent a byte a frame would cost 50 times its size. A gRPC client sends a message in frames of
//     up to 16 KiB: a request needs one small frame, its last. So a stream may have maxSmallData.
//   - control frames (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, RST_STREAM, and empty CONTINUATION and
//     DATA frames): each costs some CPU and no more. A client sends them at the pace of what it receives
//     (flow control, BDP pings), a few hundred a second at most; a connection may send
//     maxControlFrames in any second.
//
// Past a bound the connection is closed, and logged. grpc-go gives no way to send a GOAWAY on one of
// its connections from outside its transport, and a frame written beside its writer could land inside
// one of its own.

import (
	"encoding/binary"
	"fmt"
	"log"
	"net"
	"time"
)

const (
	smallData        = 1024  // bytes: a DATA frame with less, not ending its stream, is small
	maxSmallData     = 64    // small DATA frames a stream may send
	maxControlFrames = 10000 // control frames a connection may send in a second
	maxOpenStreams   = 1024  // streams the client has begun and not ended; grpc-go serves 256 at once
	clientPreface    = len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
)

// The frame types and flag that frameCounter tells apart (RFC 9113 6).
const (
	frameData, frameHeaders, frameRSTStream = 0x0, 0x1, 0x3
	flagEndStream                           = 0x1
)

// frameCounter is an established connection as grpc-go reads it, its frames counted. Only grpc-go's
// one reader goroutine of the connection calls Read, so its fields need no lock.
type frameCounter struct {
	net.Conn
	skip    int            // bytes to pass over before the next frame header: the preface, or a payload
	header  [9]byte        // the frame header being read
	have    int            // bytes of header read
	streams map[uint32]int // small DATA frames of each stream the client has begun and not ended
	second  time.Time      // when the current second of counting began
	control int            // control frames in it
}

func newFrameCounter(c net.Conn) *frameCounter {
	return &frameCounter{Conn: c, skip: clientPreface, streams: map[uint32]int{}}
}

func (f *frameCounter) Read(p []byte) (int, error) {
	n, err := f.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		k := min(f.skip, len(b)) // passed over; a header is read only once skip is 0
		f.skip -= k
		b = b[k:]
		k = copy(f.header[f.have:], b)
		f.have += k
		b = b[k:]
		if f.have < len(f.header) {
			continue
		}
		f.have = 0
		f.skip = int(binary.BigEndian.Uint32(f.header[:4]) >> 8) // the payload's length, 24 bits
		if err := f.count(); err != nil {
			log.Printf("connection from %s closed: %v", f.RemoteAddr(), err)
			f.Conn.Close()
			return 0, err
		}
	}
	return n, err
}

// count accounts the frame whose header was just read, or says which bound it breaks.
func (f *frameCounter) count() error {
	typ, flags, size := f.header[3], f.header[4], f.skip
	stream := binary.BigEndian.Uint32(f.header[5:]) & 0x7fffffff // the reserved bit cleared
	switch {
	case typ == frameHeaders && flags&flagEndStream == 0:
		f.streams[stream] = 0
	case typ == frameHeaders:
	case typ == frameData && flags&flagEndStream != 0:
		delete(f.streams, stream)
	case typ == frameData && size >= smallData: // not small: nothing to count
	case typ == frameData && size > 0:
		f.streams[stream]++
	default:
		if typ == frameRSTStream {
			delete(f.streams, stream)
		}
		if now := time.Now(); now.Sub(f.second) >= time.Second {
			f.second, f.control = now, 0
		}
		f.control++
	}
	switch {
	case f.control > maxControlFrames:
		return fmt.Errorf("too many small HTTP/2 frames: over %d control frames in a second", maxControlFrames)
	case f.streams[stream] > maxSmallData:
		return fmt.Errorf("too many small HTTP/2 frames: over %d DATA frames under %d bytes in one stream",
			maxSmallData, smallData)
	case len(f.streams) > maxOpenStreams:
		return fmt.Errorf("too many HTTP/2 streams: over %d begun and not ended", maxOpenStreams)
	}
	return nil
}
