package recstrata

// Tensors across the native boundary: Go inputs laid out as rs_tensor arrays
// (pinned for one call) and output views copied back into Go memory. Shared
// by the Model (native.go) and Host (host_native.go) calls.

/*
#include "rsg_abi.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// elemSize is the byte size of one element as the C ABI lays it out.
var elemSize = map[DType]uintptr{
	Float32: 4, Float64: 8, Int32: 4, Uint8: 1, Int16: 2, Int8: 1,
	String: unsafe.Sizeof(C.rs_bytes{}), Int64: 8, Bool: 1, BFloat16: 2,
	Uint16: 2, Float16: 2,
}

// dataPointer returns a pointer to the first element of a numeric slice of a
// type listed in goType (nil when empty).
func dataPointer(data any) unsafe.Pointer {
	switch v := data.(type) {
	case []float32:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []float64:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []int32:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []int64:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []uint8:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []int8:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []int16:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []uint16:
		return unsafe.Pointer(unsafe.SliceData(v))
	case []bool:
		return unsafe.Pointer(unsafe.SliceData(v))
	}
	return nil
}

// cCall is the C form of one call's inputs and requested output names. Its
// pointers stay valid until release (Go memory pinned for the call only).
type cCall struct {
	pin    runtime.Pinner
	ins    []C.rs_tensor // len(inputs)+1: never a pointer to nothing
	nIn    int
	names  []*C.char // len(outputNames)+1
	nNames int
}

func (c *cCall) release() { c.pin.Unpin() }

// marshalCall lays inputs and output names out for the C ABI. op names the
// Go method in errors. On success, call release once the C call returned.
func marshalCall(op string, inputs []Tensor, outputNames []string) (*cCall, error) {
	c := &cCall{nIn: len(inputs), nNames: len(outputNames)}
	pin := &c.pin

	// One arena for every NUL-terminated name and one for every shape keep the
	// number of pinned objects at 2 + one per input.
	nameBytes, nDims := 0, 0
	for i := range inputs {
		nameBytes += len(inputs[i].Name) + 1
		nDims += len(inputs[i].Shape)
	}
	for _, n := range outputNames {
		nameBytes += len(n) + 1
	}
	names := make([]byte, nameBytes+1)
	dims := make([]int64, nDims+1)
	pin.Pin(&names[0])
	pin.Pin(&dims[0])
	nameOff, dimOff := 0, 0
	putName := func(s string) *C.char {
		p := (*C.char)(unsafe.Pointer(&names[nameOff]))
		nameOff += copy(names[nameOff:], s) + 1 // the zero byte is already there
		return p
	}

	c.ins = make([]C.rs_tensor, len(inputs)+1)
	for i := range inputs {
		t := &inputs[i]
		d, count, err := t.checkGoType()
		if err != nil {
			pin.Unpin()
			return nil, &Error{Op: op, Code: InvalidArgument, Message: err.Error()}
		}
		ct := &c.ins[i]
		ct.name = putName(t.Name)
		ct.dtype = C.int(d)
		ct.ndim = C.int32_t(len(t.Shape))
		if len(t.Shape) > 0 {
			copy(dims[dimOff:], t.Shape)
			ct.shape = (*C.int64_t)(unsafe.Pointer(&dims[dimOff]))
			dimOff += len(t.Shape)
		}
		ct.byte_size = C.size_t(uintptr(count) * elemSize[d])
		if d == String {
			ct.data = stringElements(pin, t.Data.([][]byte))
		} else if p := dataPointer(t.Data); p != nil && count > 0 {
			pin.Pin(p)
			ct.data = p
		}
	}
	c.names = make([]*C.char, len(outputNames)+1)
	for i, n := range outputNames {
		c.names[i] = putName(n)
	}
	// The slices of C pointers live in Go memory handed to C: pin them too.
	pin.Pin(&c.ins[0])
	pin.Pin(&c.names[0])
	return c, nil
}

// copyOutputs copies output views of an rs_result into Go tensors.
func copyOutputs(couts []C.rs_tensor) ([]Tensor, error) {
	outs := make([]Tensor, len(couts))
	for i := range outs {
		t, err := copyOutput(&couts[i])
		if err != nil {
			return nil, err
		}
		outs[i] = t
	}
	return outs, nil
}

// stringElements lays the elements of a String tensor out as an rs_bytes
// array pointing into one contiguous copy of their bytes (two pins instead of
// one per element).
func stringElements(pin *runtime.Pinner, elems [][]byte) unsafe.Pointer {
	total := 0
	for _, e := range elems {
		total += len(e)
	}
	buf := make([]byte, total+1) // +1: element pointers are never nil
	arr := make([]C.rs_bytes, len(elems)+1)
	pin.Pin(&buf[0])
	pin.Pin(&arr[0])
	off := 0
	for i, e := range elems {
		arr[i].data = (*C.char)(unsafe.Pointer(&buf[off]))
		arr[i].size = C.size_t(len(e))
		off += copy(buf[off:], e)
	}
	return unsafe.Pointer(&arr[0])
}

// copyOutput copies one output view of an rs_result into Go memory.
func copyOutput(ct *C.rs_tensor) (Tensor, error) {
	t := Tensor{Name: C.GoString(ct.name), DType: DType(ct.dtype)}
	if ct.ndim < 0 {
		return t, newError("Predict", Internal, "output %q has negative rank %d", t.Name, int(ct.ndim))
	}
	t.Shape = make([]int64, int(ct.ndim))
	if ct.ndim > 0 {
		copy(t.Shape, unsafe.Slice((*int64)(unsafe.Pointer(ct.shape)), int(ct.ndim)))
	}
	count := t.NumElements()
	size, ok := elemSize[t.DType]
	if !ok {
		return t, newError("Predict", Unimplemented, "output %q has dtype %s, which this package cannot hold", t.Name, t.DType)
	}
	if count < 0 || uintptr(count)*size != uintptr(ct.byte_size) {
		return t, newError("Predict", Internal, "output %q: %d bytes for shape %v of %s", t.Name, uint64(ct.byte_size), t.Shape, t.DType)
	}
	n := int(count)
	src := unsafe.Pointer(ct.data)
	if src == nil && n > 0 {
		return t, newError("Predict", Internal, "output %q has no data", t.Name)
	}
	if t.DType == String {
		out := make([][]byte, n)
		if n > 0 {
			for i, e := range unsafe.Slice((*C.rs_bytes)(src), n) {
				if e.data == nil && e.size > 0 {
					return t, newError("Predict", Internal, "output %q: element %d has no data", t.Name, i)
				}
				b := make([]byte, int(e.size))
				if e.size > 0 {
					copy(b, unsafe.Slice((*byte)(unsafe.Pointer(e.data)), int(e.size)))
				}
				out[i] = b
			}
		}
		t.Data = out
		return t, nil
	}
	switch t.DType {
	case Float32:
		t.Data = copyTyped[float32](src, n)
	case Float64:
		t.Data = copyTyped[float64](src, n)
	case Int32:
		t.Data = copyTyped[int32](src, n)
	case Int64:
		t.Data = copyTyped[int64](src, n)
	case Uint8:
		t.Data = copyTyped[uint8](src, n)
	case Int8:
		t.Data = copyTyped[int8](src, n)
	case Int16:
		t.Data = copyTyped[int16](src, n)
	case Uint16, BFloat16, Float16:
		t.Data = copyTyped[uint16](src, n)
	case Bool:
		b := copyTyped[uint8](src, n)
		out := make([]bool, n)
		for i, v := range b {
			out[i] = v != 0 // any non-zero byte is true; a Go bool must be 0 or 1
		}
		t.Data = out
	}
	return t, nil
}

func copyTyped[T any](src unsafe.Pointer, n int) []T {
	out := make([]T, n)
	if n > 0 {
		copy(out, unsafe.Slice((*T)(src), n))
	}
	return out
}
