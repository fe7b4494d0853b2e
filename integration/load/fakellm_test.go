package load

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFakeLLM_ChatAnswersSmallJSON(t *testing.T) {
	f := newFake(t)
	resp, err := http.Post(f.URL+PathChat, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != string(chatResponse) {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, chatResponse)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", got)
	}
}

func TestFakeLLM_LargeSendsExactlyTheBytesAsked(t *testing.T) {
	f := newFake(t)
	for _, n := range []int64{0, 1, 1 << 20, 3<<20 + 7} {
		got, err := large(context.Background(), http.DefaultClient, f.URL, n,
			make([]byte, 32<<10))
		if err != nil || got != n {
			t.Errorf("large(%d) = %d, %v; want %d, nil", n, got, err, n)
		}
	}
}

func TestFakeLLM_RejectsOutOfRangeParameters(t *testing.T) {
	f := newFake(t)
	for _, path := range []string{
		PathChat + "?events=-1",
		PathChat + "?events=100001",
		PathChat + "?events=x",
		PathChat + "?events=2&interval=11s",
		PathChat + "?events=2&interval=0s",
		PathLarge + "?bytes=-5",
		PathLarge + "?bytes=" + "99999999999",
		PathLarge,
	} {
		resp, err := http.Post(f.URL+path, "application/json", nil)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST %s: status %d, want 400", path, resp.StatusCode)
		}
	}
}

func TestFakeLLM_IdleStreamHoldsUntilFakeCloses(t *testing.T) {
	f, err := NewFakeLLM()
	if err != nil {
		t.Fatalf("NewFakeLLM: %v", err)
	}
	defer f.Close()
	body, err := openOneIdle(context.Background(), http.DefaultClient, f.URL)
	if err != nil {
		t.Fatalf("open idle stream: %v", err)
	}
	defer body.Close()

	// The stream is open after its first event; closing the fake ends it.
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(body)
		read <- err
	}()
	f.Close()
	select {
	case <-read:
	case <-time.After(10 * time.Second):
		t.Fatal("idle stream still open 10s after the fake closed")
	}
}

func TestAppendChunk_CarriesSendTime(t *testing.T) {
	got := string(appendChunk(nil, 3, 1234567890))
	want := `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","t":1234567890,` +
		`"choices":[{"index":0,"delta":{"content":"tok3"}}]}` + "\n\n"
	if got != want {
		t.Errorf("appendChunk = %q, want %q", got, want)
	}
}
