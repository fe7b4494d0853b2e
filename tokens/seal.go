package tokens

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"time"
)

// A sealed value is: version byte 1, a 12-byte random nonce, then the
// AES-256-GCM sealing of {"v":token,"s":sent_unix_ns,"l":lifetime_ns} with
// the Redis key name as additional data (a value moved to another key does
// not open). The AES key is HKDF-SHA256 over the client secret (or, with
// tls auth, the client private key PEM), with the identity as info.
const sealVersion = 1

type sealedToken struct {
	Value    string `json:"v"`
	SentAt   int64  `json:"s"`
	Lifetime int64  `json:"l"`
}

func (s *Shared) aead() (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, s.client.sealMaterial(), nil,
		"cerbai shared token v1 "+s.client.Identity(), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (s *Shared) seal(tok Token) ([]byte, error) {
	aead, err := s.aead()
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(sealedToken{tok.Value.Reveal(), tok.SentAt.UnixNano(),
		int64(tok.Lifetime)})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+aead.NonceSize(), 1+aead.NonceSize()+len(plain)+aead.Overhead())
	out[0] = sealVersion
	_, _ = rand.Read(out[1:])
	return aead.Seal(out, out[1:], plain, []byte(s.tokenKey)), nil
}

// open reverses seal; the token's times are recomputed with this
// replica's TTL and its Source is "redis".
func (s *Shared) open(raw []byte) (Token, error) {
	aead, err := s.aead()
	if err != nil {
		return Token{}, err
	}
	n := aead.NonceSize()
	if len(raw) < 1+n || raw[0] != sealVersion {
		return Token{}, errors.New("open shared token: unknown format")
	}
	plain, err := aead.Open(nil, raw[1:1+n], raw[1+n:], []byte(s.tokenKey))
	if err != nil {
		return Token{}, errors.New("open shared token: authentication failed")
	}
	var st sealedToken
	if err := json.Unmarshal(plain, &st); err != nil || st.Value == "" {
		return Token{}, errors.New("open shared token: bad contents")
	}
	tok := NewToken(st.Value, time.Unix(0, st.SentAt), time.Duration(st.Lifetime),
		s.client.cfg.TTL)
	tok.Source = SourceRedis
	return tok, nil
}
