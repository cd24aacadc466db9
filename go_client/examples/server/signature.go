package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/recstrata/recstrata/go_client"
)

// tfTypes maps the signature JSON's TensorFlow type names to dtypes.
var tfTypes = map[string]recstrata.DType{
	"DT_FLOAT": recstrata.Float32, "DT_DOUBLE": recstrata.Float64, "DT_INT32": recstrata.Int32,
	"DT_UINT8": recstrata.Uint8, "DT_INT16": recstrata.Int16, "DT_INT8": recstrata.Int8,
	"DT_STRING": recstrata.String, "DT_INT64": recstrata.Int64, "DT_BOOL": recstrata.Bool,
	"DT_BFLOAT16": recstrata.BFloat16, "DT_UINT16": recstrata.Uint16, "DT_HALF": recstrata.Float16,
}

// sigCache holds the signature of each (model, version) once read: the
// host's only way to describe a version is a call (below), which it counts
// as a request. A version number is assumed to keep its signature.
type sigCache struct{ m sync.Map } // "model\x00version" -> *sigEntry

type sigEntry struct{ inputs, outputs []recstrata.TensorInfo }

// get returns the signature of the leased version of model.
func (c *sigCache) get(model string, l *recstrata.Lease) (inputs, outputs []recstrata.TensorInfo, err error) {
	key := model + "\x00" + strconv.FormatInt(l.Version(), 10)
	if e, ok := c.m.Load(key); ok {
		return e.(*sigEntry).inputs, e.(*sigEntry).outputs, nil
	}
	ins, outs, err := signature(l)
	if err != nil {
		return nil, nil, err
	}
	c.m.Store(key, &sigEntry{ins, outs})
	return ins, outs, nil
}

// signature is a leased version's inputs and outputs. The library answers
// an empty PredictRequest with the signature as JSON (DeepRec's convention),
// which is the host's way to describe a version.
func signature(l *recstrata.Lease) (inputs, outputs []recstrata.TensorInfo, err error) {
	text, err := l.PredictBytes(nil)
	if err != nil {
		return nil, nil, err
	}
	var doc struct {
		Inputs, Outputs []sigTensor
	}
	if err := json.Unmarshal(text, &doc); err != nil {
		return nil, nil, &recstrata.Error{Op: "Signature", Code: recstrata.Internal,
			Message: fmt.Sprintf("signature JSON of version %d: %v", l.Version(), err)}
	}
	return infosOf(doc.Inputs), infosOf(doc.Outputs), nil
}

// sigTensor is one tensor of the signature JSON (shape null: unknown rank).
type sigTensor struct {
	Name  string  `json:"name"`
	Type  string  `json:"type"`
	Shape []int64 `json:"shape"`
}

func infosOf(list []sigTensor) []recstrata.TensorInfo {
	out := make([]recstrata.TensorInfo, len(list))
	for i, t := range list {
		rank := len(t.Shape)
		if t.Shape == nil {
			rank = -1
		}
		out[i] = recstrata.TensorInfo{Name: t.Name, DType: tfTypes[t.Type], Shape: t.Shape, Rank: rank}
	}
	return out
}
