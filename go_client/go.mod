module github.com/recstrata/recstrata/go_client

// Standard library only: building and testing this module never downloads
// anything (the tests run with GOPROXY=off).
go 1.26
