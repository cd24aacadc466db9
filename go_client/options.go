package recstrata

import (
	"encoding/json"
	"fmt"
)

// Policy selects which session of the SessionGroup serves a call.
type Policy string

const (
	// PolicyMod picks the session by a hash of the calling thread (DeepRec's
	// "MOD", the library default).
	PolicyMod Policy = "MOD"
	// PolicyRoundRobin cycles through the sessions (DeepRec's "RR").
	PolicyRoundRobin Policy = "RR"
	// PolicyLeastLoaded picks the session with the fewest calls in flight.
	PolicyLeastLoaded Policy = "LEAST_LOADED"
)

// Option configures Open. Options that set config keys are applied in order,
// so a later option overrides an earlier one for the same key.
type Option func(*openConfig) error

type openConfig struct {
	library string
	keys    map[string]any
}

// WithLibrary sets the path of librecstrata.so. It takes precedence over the
// RECSTRATA_LIBRARY environment variable. The library is loaded once per
// process; see LoadLibrary.
func WithLibrary(path string) Option {
	return func(c *openConfig) error { c.library = path; return nil }
}

// WithConfig sets one key of the model config JSON (the DeepRec model_config
// names documented at rs_model_open in recstrata.h). The value is encoded
// with encoding/json.
func WithConfig(key string, value any) Option {
	return func(c *openConfig) error { c.keys[key] = value; return nil }
}

// WithConfigJSON merges a JSON object of config keys, e.g. a DeepRec
// model_config text.
func WithConfigJSON(text string) Option {
	return func(c *openConfig) error {
		var m map[string]any
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			return fmt.Errorf("config JSON: %w", err)
		}
		for k, v := range m {
			c.keys[k] = v
		}
		return nil
	}
}

// WithSignature selects the signature to serve ("serving_default").
func WithSignature(name string) Option { return WithConfig("signature_name", name) }

// WithSessions sets session_num, the number of sessions in the SessionGroup.
func WithSessions(n int) Option { return WithConfig("session_num", n) }

// WithPolicy sets select_session_policy.
func WithPolicy(p Policy) Option { return WithConfig("select_session_policy", string(p)) }

// WithThreads sets inter_op_parallelism_threads and
// intra_op_parallelism_threads (0 keeps the library default).
func WithThreads(inter, intra int) Option {
	return func(c *openConfig) error {
		if inter > 0 {
			c.keys["inter_op_parallelism_threads"] = inter
		}
		if intra > 0 {
			c.keys["intra_op_parallelism_threads"] = intra
		}
		return nil
	}
}

// WithPerSessionThreads sets use_per_session_threads: every session gets its
// own inter/intra thread pools.
func WithPerSessionThreads(on bool) Option { return WithConfig("use_per_session_threads", on) }

// WithCPUSets sets cpusets, one core set per session, e.g. "0-1;2-3".
func WithCPUSets(sets string) Option { return WithConfig("cpusets", sets) }

// WithWarmupFile sets warmup_file_name, a serialized PredictRequest run on
// every session before Open returns.
func WithWarmupFile(path string) Option { return WithConfig("warmup_file_name", path) }

// configJSON returns "" when no key was set (the library's defaults apply).
func (c *openConfig) configJSON() (string, error) {
	if len(c.keys) == 0 {
		return "", nil
	}
	b, err := json.Marshal(c.keys)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	return string(b), nil
}
