/** Kept equal to package.json `version` by a unit test. */
export const ZIPLINE_VERSION = '0.1.0';
