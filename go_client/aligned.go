package recstrata

import "unsafe"

// Numeric is the set of fixed-size element types.
type Numeric interface {
	float32 | float64 | int32 | int64 | uint8 | int8 | int16 | uint16 | bool
}

// Alignment is the input address alignment at which the library hands a
// tensor's data to TensorFlow without copying it (recstrata.h, rs_tensor).
const Alignment = 64

// MakeAligned returns a zeroed slice of n elements whose first element is
// Alignment-aligned, so an input tensor built on it is passed to TensorFlow
// without a copy. (Go's heap does not move objects, so the alignment holds
// for the slice's lifetime.) Other slices work too; the library copies them.
func MakeAligned[T Numeric](n int) []T {
	var zero T
	size := int(unsafe.Sizeof(zero))
	spare := Alignment / size
	buf := make([]T, n+spare)
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	off := int((Alignment-addr%Alignment)%Alignment) / size
	return buf[off : off+n : off+n]
}
