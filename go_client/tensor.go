package recstrata

import (
	"fmt"
	"reflect"
)

// DType is an element type. The numbers equal rs_dtype, TensorFlow's
// TF_DataType and the ArrayDataType of DeepRec's predict.proto.
type DType int32

// Element types and the Go slice type that holds their data in Tensor.Data.
const (
	Invalid  DType = 0
	Float32  DType = 1  // []float32
	Float64  DType = 2  // []float64
	Int32    DType = 3  // []int32
	Uint8    DType = 4  // []uint8
	Int16    DType = 5  // []int16
	Int8     DType = 6  // []int8
	String   DType = 7  // [][]byte (arbitrary bytes, not NUL-terminated)
	Int64    DType = 9  // []int64
	Bool     DType = 10 // []bool
	BFloat16 DType = 14 // []uint16 (raw bfloat16 bits)
	Uint16   DType = 17 // []uint16
	Float16  DType = 19 // []uint16 (raw IEEE half bits; TF_HALF)
)

var dtypeNames = map[DType]string{
	Invalid: "invalid", Float32: "float32", Float64: "float64", Int32: "int32",
	Uint8: "uint8", Int16: "int16", Int8: "int8", String: "string",
	Int64: "int64", Bool: "bool", BFloat16: "bfloat16", Uint16: "uint16",
	Float16: "float16",
}

// String returns the numpy-style name ("float32"), or "dtype(n)".
func (d DType) String() string {
	if name, ok := dtypeNames[d]; ok {
		return name
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// ParseDType maps a name returned by DType.String back to the DType.
func ParseDType(name string) (DType, bool) {
	for d, n := range dtypeNames {
		if n == name && d != Invalid {
			return d, true
		}
	}
	return Invalid, false
}

// goType is the slice type holding the data of each supported dtype.
var goType = map[DType]reflect.Type{
	Float32:  reflect.TypeFor[[]float32](),
	Float64:  reflect.TypeFor[[]float64](),
	Int32:    reflect.TypeFor[[]int32](),
	Uint8:    reflect.TypeFor[[]uint8](),
	Int16:    reflect.TypeFor[[]int16](),
	Int8:     reflect.TypeFor[[]int8](),
	String:   reflect.TypeFor[[][]byte](),
	Int64:    reflect.TypeFor[[]int64](),
	Bool:     reflect.TypeFor[[]bool](),
	BFloat16: reflect.TypeFor[[]uint16](),
	Uint16:   reflect.TypeFor[[]uint16](),
	Float16:  reflect.TypeFor[[]uint16](),
}

// Element is the set of Go element types a Tensor can hold; []byte stands for
// one element of a String tensor.
type Element interface {
	float32 | float64 | int32 | int64 | uint8 | int8 | int16 | uint16 | bool | []byte
}

// Tensor is a dense row-major tensor owned by Go.
//
// Data is a slice of the Go type listed next to the DType constants, holding
// exactly the product of Shape elements (a nil or empty Shape is a scalar with
// one element). The library checks the element count against the shape and
// the dtype against the signature; this package checks only that Data's Go
// type matches DType.
//
// As an input, a Tensor is read during the call only; the library never keeps
// a pointer to it. Outputs are fresh Go slices owned by the caller.
type Tensor struct {
	Name  string // input/output alias; Predict's map key takes precedence
	DType DType
	Shape []int64
	Data  any
}

// NewTensor builds a tensor from a Go slice; the dtype follows from T
// ([]byte elements make a String tensor, uint16 makes Uint16: set DType to
// Float16 or BFloat16 yourself for raw half-precision bits). Without a shape
// the tensor is one-dimensional, [len(data)].
func NewTensor[T Element](data []T, shape ...int64) Tensor {
	if len(shape) == 0 {
		shape = []int64{int64(len(data))}
	}
	var d DType
	switch any(data).(type) {
	case []float32:
		d = Float32
	case []float64:
		d = Float64
	case []int32:
		d = Int32
	case []int64:
		d = Int64
	case []uint8:
		d = Uint8
	case []int8:
		d = Int8
	case []int16:
		d = Int16
	case []uint16:
		d = Uint16
	case []bool:
		d = Bool
	case [][]byte:
		d = String
	}
	return Tensor{DType: d, Shape: append([]int64(nil), shape...), Data: data}
}

// NumElements is the product of the shape's dimensions (1 for a scalar).
func (t Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Float32s returns the data of a Float32 tensor, or nil for another dtype.
func (t Tensor) Float32s() []float32 { v, _ := t.Data.([]float32); return v }

// Float64s returns the data of a Float64 tensor, or nil for another dtype.
func (t Tensor) Float64s() []float64 { v, _ := t.Data.([]float64); return v }

// Int32s returns the data of an Int32 tensor, or nil for another dtype.
func (t Tensor) Int32s() []int32 { v, _ := t.Data.([]int32); return v }

// Int64s returns the data of an Int64 tensor, or nil for another dtype.
func (t Tensor) Int64s() []int64 { v, _ := t.Data.([]int64); return v }

// Bools returns the data of a Bool tensor, or nil for another dtype.
func (t Tensor) Bools() []bool { v, _ := t.Data.([]bool); return v }

// Strings returns the elements of a String tensor, or nil for another dtype.
func (t Tensor) Strings() [][]byte { v, _ := t.Data.([][]byte); return v }

// checkGoType verifies that Data's Go type is the one DType needs (inferring
// DType from Data when it is Invalid) and returns the dtype and element count.
func (t Tensor) checkGoType() (DType, int, error) {
	d := t.DType
	if t.Data == nil {
		if d == Invalid {
			return Invalid, 0, fmt.Errorf("input %q has neither a dtype nor data", t.Name)
		}
		if _, ok := goType[d]; !ok {
			return Invalid, 0, fmt.Errorf("input %q: unsupported dtype %s", t.Name, d)
		}
		return d, 0, nil
	}
	v := reflect.ValueOf(t.Data)
	if d == Invalid {
		for cand, typ := range goType {
			if typ == v.Type() && cand != BFloat16 && cand != Float16 {
				d = cand
				break
			}
		}
		if d == Invalid {
			return Invalid, 0, fmt.Errorf("input %q: data of Go type %T is not a supported tensor type", t.Name, t.Data)
		}
	}
	want, ok := goType[d]
	if !ok {
		return Invalid, 0, fmt.Errorf("input %q: unsupported dtype %s", t.Name, d)
	}
	if v.Type() != want {
		return Invalid, 0, fmt.Errorf("input %q: dtype %s needs data of Go type %s, got %T", t.Name, d, want, t.Data)
	}
	return d, v.Len(), nil
}

// TensorInfo describes one input or output of the model's signature.
type TensorInfo struct {
	Name  string
	DType DType
	// Shape has -1 for a dimension the signature leaves open. It is nil when
	// the rank itself is unknown (Rank == -1).
	Shape []int64
	Rank  int
}
