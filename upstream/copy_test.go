package upstream

import (
	"sync"
	"testing"
)

func TestBufPool_BySizeOfTheBody(t *testing.T) {
	tests := []struct {
		name          string
		stream        bool
		contentLength int64
		want          int
	}{
		{"event stream", true, -1, streamBufSize},
		{"stream with a length is still a stream", true, 10 << 20, streamBufSize},
		{"small JSON", false, 600, bulkBufSize},
		{"exactly 32 KiB", false, bulkBufSize, bulkBufSize},
		{"mid-sized", false, bulkBufSize + 1, midBufSize},
		{"exactly 256 KiB", false, midBufSize, midBufSize},
		{"large download", false, 64 << 20, largeBufSize},
	}
	for _, tt := range tests {
		pool := bufPool(tt.stream, tt.contentLength)
		got := takeLen(pool)
		if got != tt.want {
			t.Errorf("%s: got a %d-byte buffer, want %d", tt.name, got, tt.want)
		}
	}
}

func takeLen(p *sync.Pool) int {
	bp := p.Get().(*[]byte)
	defer p.Put(bp)
	return len(*bp)
}
