// Package recstrata embeds the recstrata inference processor in Go programs.
//
// It loads librecstrata.so at run time with dlopen (no header or library is
// needed to build), opens TensorFlow SavedModels served by the library's
// SessionGroup, and runs them with typed tensors or DeepRec PredictRequest
// bytes:
//
//	m, err := recstrata.Open("/models/ctr", recstrata.WithSessions(2),
//		recstrata.WithPolicy(recstrata.PolicyLeastLoaded))
//	if err != nil { ... }
//	defer m.Close()
//	out, err := m.Predict(map[string]recstrata.Tensor{
//		"x": recstrata.NewTensor([]float32{1, 2, 3, 4}, 1, 4),
//	})
//	y := out["y"].Float32s()
//
// The library is found through WithLibrary, else the RECSTRATA_LIBRARY
// environment variable, else the dynamic loader's search path
// (DefaultLibrary). `python -c "import recstrata; print(recstrata.library_path())"`
// prints the path of the library the Python package installed.
//
// Concurrency: a *Model is safe for concurrent use by many goroutines; Close
// waits for calls in flight. Errors are *Error values carrying the library's
// status code; compare codes with errors.Is(err, recstrata.InvalidArgument).
//
// Memory: inputs are passed to C for the duration of one call (pinned with
// runtime.Pinner, never retained by the library); outputs are copied into Go
// slices before the native result is freed, so no Go value refers to native
// memory.
package recstrata
