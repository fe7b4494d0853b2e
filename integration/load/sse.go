package load

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"
)

// StreamStats is what one SSE response delivered.
type StreamStats struct {
	Events int  // data lines other than [DONE]
	Done   bool // "data: [DONE]" arrived; a stream without it was cut
}

var (
	dataPrefix = []byte("data:")
	doneData   = []byte("[DONE]")
	stampKey   = []byte(`"t":`)
)

// ReadStream reads an SSE body to its end. For every event that carries a
// send time ("t", unix nanoseconds, as FakeLLM sends) it appends now() minus
// that time to delays. A body that ends cleanly without [DONE] returns a
// nil error and Done false: the caller counts it as cut. Any read error
// other than io.EOF is returned with what was read so far.
func ReadStream(r io.Reader, now func() time.Time, delays []time.Duration) (
	[]time.Duration, StreamStats, error) {
	var st StreamStats
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: skip the rest of it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			line = nil
		}
		if data, ok := bytes.CutPrefix(line, dataPrefix); ok {
			data = bytes.TrimSpace(data)
			if bytes.Equal(data, doneData) {
				st.Done = true
			} else {
				st.Events++
				if t, ok := parseStamp(data); ok {
					delays = append(delays, now().Sub(time.Unix(0, t)))
				}
			}
		}
		if err == io.EOF {
			return delays, st, nil
		}
		if err != nil {
			return delays, st, err
		}
	}
}

// parseStamp finds `"t":<digits>` in an event's data.
func parseStamp(data []byte) (int64, bool) {
	i := bytes.Index(data, stampKey)
	if i < 0 {
		return 0, false
	}
	digits := data[i+len(stampKey):]
	end := 0
	for end < len(digits) && digits[end] >= '0' && digits[end] <= '9' {
		end++
	}
	t, err := strconv.ParseInt(string(digits[:end]), 10, 64)
	return t, err == nil
}
