package recstrata

import (
	"errors"
	"fmt"
)

// Code is a status code of the native library (the rs_status enum of
// recstrata.h). The library may add codes; treat unknown ones as errors.
//
// A Code is itself an error so that it can be used as a sentinel:
//
//	if errors.Is(err, recstrata.NotFound) { ... }
type Code int32

// Status codes, numerically equal to rs_status.
const (
	OK                 Code = 0
	InvalidArgument    Code = 1  // bad input: names, dtypes, shapes, bytes
	NotFound           Code = 2  // missing file, model, signature, library
	AlreadyExists      Code = 3  // the name is taken
	FailedPrecondition Code = 4  // object in the wrong state (e.g. closed)
	OutOfRange         Code = 5  // index past the end
	IO                 Code = 6  // the OS refused a read or write
	Corruption         Code = 7  // checksum or structure mismatch on disk
	Incompatible       Code = 8  // incompatible format or library version
	ResourceExhausted  Code = 9  // out of memory or over a configured cap
	Unimplemented      Code = 10 // not supported (yet)
	Internal           Code = 11 // a bug in recstrata or TensorFlow
)

var codeNames = map[Code]string{
	OK:                 "RS_OK",
	InvalidArgument:    "RS_ERR_INVALID_ARGUMENT",
	NotFound:           "RS_ERR_NOT_FOUND",
	AlreadyExists:      "RS_ERR_ALREADY_EXISTS",
	FailedPrecondition: "RS_ERR_FAILED_PRECONDITION",
	OutOfRange:         "RS_ERR_OUT_OF_RANGE",
	IO:                 "RS_ERR_IO",
	Corruption:         "RS_ERR_CORRUPTION",
	Incompatible:       "RS_ERR_INCOMPATIBLE",
	ResourceExhausted:  "RS_ERR_RESOURCE_EXHAUSTED",
	Unimplemented:      "RS_ERR_UNIMPLEMENTED",
	Internal:           "RS_ERR_INTERNAL",
}

// String returns the C name of the code ("RS_ERR_NOT_FOUND"), or
// "RS_UNKNOWN(n)" for a code this package does not know.
func (c Code) String() string {
	if name, ok := codeNames[c]; ok {
		return name
	}
	return fmt.Sprintf("RS_UNKNOWN(%d)", int32(c))
}

// Error makes a Code usable as an errors.Is target. It equals String, so a
// Code prints the same with %s and %v.
func (c Code) Error() string { return c.String() }

// Error is the error value of every failed call: the library's status code
// and message, plus the operation that failed. Messages are copied out of the
// native error object inside the same C call that produced it, so they are
// complete and safe to keep.
type Error struct {
	Op      string // the Go method that failed, e.g. "Open", "Predict"
	Code    Code
	Message string
	wrapped error // a sentinel such as ErrClosed, or nil
}

func (e *Error) Error() string {
	if e.Op == "" {
		return fmt.Sprintf("recstrata: %s (%s)", e.Message, e.Code.String())
	}
	return fmt.Sprintf("recstrata: %s: %s (%s)", e.Op, e.Message, e.Code.String())
}

// Is reports whether target is this error's Code, so callers can write
// errors.Is(err, recstrata.InvalidArgument).
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// Unwrap returns the sentinel this error stands for (ErrClosed), if any.
func (e *Error) Unwrap() error { return e.wrapped }

// ErrClosed is matched (errors.Is) by every call on a closed Model or Host
// and on a released Lease. Those errors also match FailedPrecondition.
var ErrClosed = errors.New("recstrata: closed")

func newError(op string, code Code, format string, args ...any) *Error {
	return &Error{Op: op, Code: code, Message: fmt.Sprintf(format, args...)}
}

func closedError(op string) *Error {
	return &Error{Op: op, Code: FailedPrecondition, Message: "model is closed", wrapped: ErrClosed}
}
