package config

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
)

// nonFinite returns the key path and value of every NaN or infinite float
// under v (a struct, map, slice or float), named as the YAML keys are. No
// setting means anything by NaN, and every range check passes it
// (NaN < 0 and NaN > 1 are both false).
func nonFinite(v reflect.Value, path string) []error {
	var errs []error
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			errs = append(errs, fmt.Errorf("%s: must be a finite number (got %v)", where(path), f))
		}
	case reflect.Struct:
		fields := structFields(v) // load.go: the keys as the decoder knows them
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			errs = append(errs, nonFinite(fields[name], join(path, name))...)
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return nil
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			errs = append(errs, nonFinite(v.MapIndex(k), join(path, k.String()))...)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			errs = append(errs, nonFinite(v.Index(i), fmt.Sprintf("%s[%d]", path, i))...)
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			errs = append(errs, nonFinite(v.Elem(), path)...)
		}
	}
	return errs
}

func where(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}
