// Checks on settings the owner types, matching the node's own (which has the last word).

/** Why a payout address cannot be used, or null when it can (empty: not set yet). */
export function payoutProblem(address: string): string | null {
  if (address.length > 200) return "The payout address is longer than 200 characters.";
  if (/\s/.test(address)) return "The payout address cannot contain spaces or line breaks.";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(address)) return "The payout address contains a control character.";
  return null;
}
