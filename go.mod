module github.com/cerbai/cerbai

go 1.26.0

require (
	github.com/caarlos0/env/v11 v11.4.2
	github.com/gomodule/redigo v1.9.3
	github.com/google/go-cmp v0.7.0
)
