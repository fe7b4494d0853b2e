package fake

import (
	"bufio"
	"io"
	"net"
	"strings"
)

// Events delivers the data of each server-sent event read from r, and
// closes the channel when r ends.
func Events(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				ch <- data
			}
		}
	}()
	return ch
}

// UnusedAddr returns a loopback host:port where nothing listens right now.
// Another process may take it before the caller does: a caller that
// listens on it retries on a collision.
func UnusedAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}
