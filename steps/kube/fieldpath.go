package kube

// GetPath is the value at path (map keys) in obj, and whether it is there.
func GetPath(obj map[string]any, path []string) (any, bool) {
	var cur any = obj
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// SetPath sets the value at path (map keys, at least one) in obj, making the maps on the way,
// in place of whatever is not a map.
func SetPath(obj map[string]any, path []string, v any) {
	m := obj
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// TakePath removes the value at path (map keys, at least one) from obj and returns it, and
// whether it was there.
func TakePath(obj map[string]any, path []string) (any, bool) {
	m := obj
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	v, ok := m[path[len(path)-1]]
	delete(m, path[len(path)-1])
	return v, ok
}
