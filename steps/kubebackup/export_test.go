package kubebackup

var InspectForTest = inspect

func WithTypeMetaForTest(obj []byte, apiVersion, kind string, hasAV, hasKind bool) []byte {
	return withTypeMeta(nil, obj, apiVersion, kind, hasAV, hasKind)
}
