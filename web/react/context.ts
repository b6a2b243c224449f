// The `Arbor` handle of a React tree: `ArborProvider` puts it in context,
// `useArbor` takes it out (every hook and the `Inspector` read through it).

import { createContext, createElement, useContext, type ReactNode } from "react";
import type { Arbor } from "../src/arbor.js";

const ArborContext = createContext<Arbor | null>(null);

/** Makes `arbor` (from `Arbor.open`) the handle of the hooks below it. */
export function ArborProvider(props: { arbor: Arbor; children?: ReactNode }): ReactNode {
  return createElement(ArborContext.Provider, { value: props.arbor }, props.children);
}

/** The `Arbor` handle of the nearest `ArborProvider`, for writes
 * (`create`, `move`, `set`, `delete`, ...) and everything else. */
export function useArbor(): Arbor {
  const arbor = useContext(ArborContext);
  if (!arbor) throw new Error("useArbor: no <ArborProvider arbor={...}> above this component");
  return arbor;
}
