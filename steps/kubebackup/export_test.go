package kubebackup

var InspectForTest = inspect

func WithTypeMetaForTest(obj []byte, apiVersion, kind string, hasAV, hasKind bool) []byte {
	return withTypeMeta(nil, obj, apiVersion, kind, hasAV, hasKind)
}

// SetPageSizeForTest sets the limit of each list request until the test ends.
func SetPageSizeForTest(t interface{ Cleanup(func()) }, n int) {
	was := pageSize
	pageSize = n
	t.Cleanup(func() { pageSize = was })
}
